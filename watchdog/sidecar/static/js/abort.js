// The "Stop this run" section of a span's detail: token, the four actions, a confirm
// step, then POST /v1/spans/{span_id}/abort.

import { api, NeedsToken, token, TOKEN_KEY } from "./api.js";
import { el } from "./dom.js";
import { label } from "./format.js";

// The section, and its action buttons (disabled by the caller while the span cannot be
// aborted). `currentSpan()` gives the span shown when a button is pressed.
export function abortSection(currentSpan) {
  const abort = el("section", "abort");
  abort.append(
    el("h3", "", "Stop this run"),
    el(
      "p",
      "muted",
      "cancel: cancel the task that owns the span, then the task running its trace. " +
        "terminate: then SIGTERM the process. kill: then SIGKILL. Each step waits for the " +
        "span to end first.",
    ),
  );
  // A form of its own, so the browser treats the token as a password field.
  const tokenForm = el("form");
  tokenForm.addEventListener("submit", (event) => event.preventDefault());
  const tokenLabel = el("label", "", "Token");
  const tokenInput = el("input");
  tokenInput.type = "password";
  tokenInput.id = "abort-token";
  tokenInput.autocomplete = "off";
  tokenInput.placeholder = "sidecar token";
  tokenInput.value = token();
  tokenLabel.append(tokenInput);
  tokenForm.append(tokenLabel);
  const buttons = ["timeout", "cancel", "terminate", "kill"].map((action) => {
    const button = el("button", action === "kill" ? "danger" : "", action === "timeout" ? "Time out the call" : action === "cancel" ? "Cancel run" : action === "terminate" ? "Terminate process" : "Kill process");
    button.type = "button";
    button.dataset.action = action;
    button.id = "abort-" + action;
    return button;
  });
  const buttonRow = el("div", "buttons");
  buttonRow.append(...buttons);
  const confirm = el("div", "confirm");
  confirm.hidden = true;
  const question = el("p");
  const yes = el("button", "danger", "Confirm abort");
  yes.type = "button";
  yes.id = "abort-confirm";
  const no = el("button", "quiet", "Back");
  no.type = "button";
  no.id = "abort-back";
  const confirmButtons = el("div", "buttons");
  confirmButtons.append(yes, no);
  confirm.append(question, confirmButtons);
  const result = el("p", "result");
  result.id = "abort-result";
  result.setAttribute("role", "status");
  abort.append(tokenForm, buttonRow, confirm, result);

  let pending = null;
  buttonRow.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button || button.disabled) return;
    if (!tokenInput.value.trim()) {
      showResult(result, false, "Enter the sidecar's token first: aborting always needs it.");
      tokenInput.focus();
      return;
    }
    pending = button.dataset.action;
    const span = currentSpan();
    question.textContent =
      "Abort " + span.kind + " \u201c" + label(span) + "\u201d in " + span.service +
      " (pid " + span.pid + ") with \u201c" + pending + "\u201d?";
    confirm.hidden = false;
    yes.focus();
  });
  no.addEventListener("click", () => {
    pending = null;
    confirm.hidden = true;
  });
  yes.addEventListener("click", async () => {
    const action = pending;
    const span = currentSpan();
    confirm.hidden = true;
    if (!action || !span) return;
    sessionStorage.setItem(TOKEN_KEY, tokenInput.value.trim());
    showResult(result, true, "Sending " + action + "…");
    try {
      const reply = await api("/v1/spans/" + encodeURIComponent(span.span_id) + "/abort", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ action, instance_id: span.instance_id }),
      });
      showResult(
        result,
        true,
        "Abort started: " + reply.steps.join(" → ") + (reply.dry_run ? " (dry run: nothing is sent)" : ""),
      );
    } catch (error) {
      const why = error instanceof NeedsToken ? "the token was refused (" + error.message + ")" : error.message;
      showResult(result, false, "Abort refused: " + why);
    }
  });
  return { section: abort, buttons };
}

function showResult(element, ok, text) {
  element.textContent = text;
  element.className = "result " + (ok ? "ok" : "error");
}
