//! Settle's benchmark programs live in `src/bin/`; each prints what it measured. This library is
//! intentionally empty.
