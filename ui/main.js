// The console's screens: connect (server URL + API token, kept by the `connect` command in the OS
// keyring) and home, with sign out. The token never comes back from the Rust side.
import { invoke } from "./tauri.js";

const $ = (id) => document.getElementById(id);

function showError(element, error) {
  element.textContent = error?.message ?? String(error);
  element.hidden = false;
}

function showScreen(name) {
  $("connect-screen").hidden = name !== "connect";
  $("home-screen").hidden = name !== "home";
}

async function connect(event) {
  event.preventDefault();
  const button = $("connect-button");
  const errorBox = $("connect-error");
  errorBox.hidden = true;
  button.disabled = true;
  button.textContent = "Connecting…";
  try {
    const connection = await invoke("connect", {
      server_url: $("server-url").value,
      token: $("token").value,
    });
    $("token").value = "";
    $("connected-server").textContent = connection.server_url;
    $("connected-keyring").textContent = connection.keyring;
    showScreen("home");
  } catch (error) {
    showError(errorBox, error);
    (error?.type === "invalid_token" ? $("token") : $("server-url")).focus();
  } finally {
    button.disabled = false;
    button.textContent = "Connect";
  }
}

async function signOut() {
  $("home-error").hidden = true;
  try {
    await invoke("sign_out");
    showScreen("connect");
    $("token").focus();
  } catch (error) {
    showError($("home-error"), error);
  }
}

$("connect-form").addEventListener("submit", connect);
$("sign-out-button").addEventListener("click", signOut);
$("server-url").focus();
