// The one door to the Rust side: Tauri's `invoke`, which the app injects as `window.__TAURI__`
// (`withGlobalTauri`: there is no bundler to import @tauri-apps/api). Even the export's save dialog
// is opened by a Rust command (`choose_export_path`), so no path comes from this side.

function tauri() {
  return window.__TAURI__;
}

const NO_BACKEND = {
  type: "no_backend",
  message: "This page works inside the Settle Console app only.",
};

/** Calls a command of src-tauri/src/commands.rs; rejects with `{ type, message }`. */
export function invoke(command, args = {}) {
  const core = tauri()?.core;
  if (!core) {
    return Promise.reject(NO_BACKEND);
  }
  // Commands reject with `{ type, message }`; anything else (a Tauri failure) is wrapped alike.
  return core.invoke(command, args).catch((error) => {
    const problem = error?.message ? error : { type: "internal", message: String(error) };
    return Promise.reject(problem);
  });
}
