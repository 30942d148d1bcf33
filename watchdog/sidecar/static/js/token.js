// The token dialog: asked for when the sidecar refuses the page's requests, and at will.

import { token, TOKEN_KEY } from "./api.js";
import { $ } from "./dom.js";
import { model } from "./model.js";
import { schedule, setConnection } from "./poll.js";

const dialog = $("token-dialog");

// Stop polling and ask for the token; `message` is why the sidecar said no.
export function askForToken(message) {
  model.paused = true;
  clearTimeout(model.timer);
  setConnection(false, "token needed");
  $("token-message").textContent = token()
    ? "The sidecar refused the token (" + message + "). Enter the right one."
    : "This sidecar needs its token (server.token) to show its data.";
  if (!dialog.open) dialog.showModal();
  $("token-input").focus();
}

// The dialog's buttons, and the header's Token button that opens it.
export function bindTokenDialog() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    const field = document.getElementById("abort-token");
    if (field && value) field.value = value;
    dialog.close();
    model.paused = false;
    schedule(0);
  });
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("token-input").value = "";
    const field = document.getElementById("abort-token");
    if (field) field.value = "";
    dialog.close();
    model.paused = false;
    schedule(0);
  });
  $("token-close").addEventListener("click", () => dialog.close());
  $("token-button").addEventListener("click", () => {
    $("token-message").textContent = "The token is kept in this tab only.";
    $("token-input").value = token();
    dialog.showModal();
  });
}
