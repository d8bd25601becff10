//! The black-box test package of Settle. Its tests live in `blackbox/` (one binary, many modules);
//! this library is intentionally empty.
