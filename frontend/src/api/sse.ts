// Server-Sent Events over fetch (not EventSource, which cannot send the Authorization
// header): parses `event:`, `data:` and `id:` lines, reconnects with Last-Event-ID after a
// dropped stream, and stops when `isLast` says an event was the final one or on abort.
import { API, authHeaders } from "./client";

export type SseEvent = { event: string; data: string; id: string | null };

async function readOnce(
  url: string,
  lastId: string | null,
  signal: AbortSignal,
  onEvent: (e: SseEvent) => boolean,
): Promise<{ lastId: string | null; finished: boolean }> {
  const headers: Record<string, string> = { Accept: "text/event-stream", ...authHeaders() };
  if (lastId) headers["Last-Event-ID"] = lastId;
  const res = await fetch(API + url, { headers, signal, cache: "no-store" });
  if (res.status === 204) return { lastId, finished: true }; // nothing more will come
  if (!res.ok || !res.body) throw new Error(`events: HTTP ${res.status}`);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let event = "message";
  let data: string[] = [];
  let id: string | null = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return { lastId, finished: false };
    buf += value.replace(/\r\n?/g, "\n");
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line === "") {
        if (data.length) {
          if (id !== null) lastId = id;
          const last = onEvent({ event, data: data.join("\n"), id });
          if (last) {
            await reader.cancel().catch(() => undefined);
            return { lastId, finished: true };
          }
        }
        event = "message";
        data = [];
        id = null;
      } else if (line.startsWith(":")) {
        // a keep-alive comment
      } else {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = val;
        else if (field === "data") data.push(val);
        else if (field === "id") id = val;
      }
    }
  }
}

/** Follow `url` until an event for which `onEvent` returns true, or until `signal` aborts. */
export async function follow(
  url: string,
  signal: AbortSignal,
  onEvent: (e: SseEvent) => boolean,
  retryMs = 1000,
): Promise<void> {
  let lastId: string | null = null;
  while (!signal.aborted) {
    try {
      const r = await readOnce(url, lastId, signal, onEvent);
      lastId = r.lastId;
      if (r.finished) return;
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof Error && /HTTP 4\d\d/.test(e.message)) throw e; // will not get better
    }
    await new Promise((r) => setTimeout(r, retryMs));
  }
}
