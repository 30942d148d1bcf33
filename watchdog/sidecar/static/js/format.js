// How the page words what it shows: durations, times, span labels and states.

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 10) return seconds.toFixed(1) + " s";
  if (seconds < 60) return Math.floor(seconds) + " s";
  if (seconds < 3600) {
    const s = Math.floor(seconds % 60);
    return Math.floor(seconds / 60) + "m " + String(s).padStart(2, "0") + "s";
  }
  const m = Math.floor((seconds % 3600) / 60);
  return Math.floor(seconds / 3600) + "h " + String(m).padStart(2, "0") + "m";
}

export function clock(iso) {
  if (!iso) return "–";
  const when = new Date(iso);
  return isNaN(when) ? iso : when.toLocaleTimeString();
}

export function ago(iso) {
  if (!iso) return "";
  const seconds = (Date.now() - new Date(iso).getTime()) / 1000;
  return seconds < 0 ? "just now" : duration(seconds) + " ago";
}

// Model calls carry no name on the wire (privacy): say whose call it is instead.
export function label(span) {
  if (span.name) return span.name;
  return span.agent ? span.kind + " of " + span.agent : span.kind;
}

export function stateText(span, blocked) {
  if (span.state === "hung") return "hung · " + (span.reason || "over threshold");
  if (span.state === "orphaned") return "orphaned · process died";
  if (blocked) return "open · event loop blocked";
  return "open";
}

// "read 600 s · connect 5 s · 2 retries (openai default)"; null when not reported.
export function clientTimeouts(timeouts) {
  if (!timeouts) return null;
  const seconds = (value) => (value === null ? "no limit" : value + " s");
  return "read " + seconds(timeouts.read) + " · connect " + seconds(timeouts.connect) +
    (timeouts.max_retries === null ? "" : " · " + timeouts.max_retries + " retries") +
    " (" + timeouts.source + ")";
}
