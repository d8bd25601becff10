// The one door to the Rust side: Tauri's `invoke`, which the app injects as `window.__TAURI__`
// (`withGlobalTauri` in tauri.conf.json; there is no bundler to import @tauri-apps/api with).

/** Calls a command of src-tauri/src/commands.rs; rejects with `{ type, message }`. */
export function invoke(command, args = {}) {
  const core = window.__TAURI__?.core;
  if (!core) {
    return Promise.reject({
      type: "no_backend",
      message: "This page works inside the Settle Console app only.",
    });
  }
  // Commands reject with `{ type, message }`; anything else (a Tauri failure) is wrapped alike.
  return core.invoke(command, args).catch((error) => {
    const problem = error?.message ? error : { type: "internal", message: String(error) };
    return Promise.reject(problem);
  });
}
