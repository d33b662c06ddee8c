import { useCallback, useEffect, useRef, useState } from "react";
import { api, ApiError } from "./client";

export type Loaded<T> = {
  data: T | undefined;
  error: ApiError | Error | undefined;
  loading: boolean;
  reload: () => void;
  set: (data: T) => void;
};

/** GET `path` (null: nothing yet) and keep the answer; `reload()` fetches it again.
 * `everyMs`: read it again that often while the page is visible (list pages stay current
 * without a reload; a run's page follows its event stream instead). */
export function useApi<T>(path: string | null, everyMs?: number): Loaded<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<ApiError | Error | undefined>(undefined);
  const [loading, setLoading] = useState(path !== null);
  const [tick, setTick] = useState(0);
  // Every request (load, reload, refresh) is numbered when sent, and an answer is shown only
  // if no later request's answer is shown already: a refresh sent before a pause was saved
  // and answered after the reload would otherwise put the old state back on screen.
  const seq = useRef({ sent: 0, shown: 0 });
  const show = useCallback((n: number, d: T) => {
    if (n <= seq.current.shown) return;
    seq.current.shown = n;
    setData(d);
  }, []);
  useEffect(() => {
    if (path === null) return;
    let alive = true;
    const n = ++seq.current.sent;
    setLoading(true);
    api<T>(path).then(
      (d) => {
        if (!alive) return;
        show(n, d);
        setError(undefined);
        setLoading(false);
      },
      (e: Error) => {
        if (!alive) return;
        setError(e);
        setLoading(false);
      },
    );
    return () => {
      alive = false;
    };
  }, [path, tick, show]);
  useEffect(() => {
    if (path === null || !everyMs) return;
    let alive = true; // a refresh of the previous path is never shown
    const timer = setInterval(() => {
      if (document.visibilityState !== "visible") return;
      const n = ++seq.current.sent;
      api<T>(path).then((d) => alive && show(n, d), () => undefined); // a failed refresh keeps what is shown
    }, everyMs);
    return () => {
      alive = false;
      clearInterval(timer);
    };
  }, [path, everyMs, show]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  const set = useCallback((d: T) => {
    seq.current.shown = ++seq.current.sent; // what was set beats every answer still on its way
    setData(d);
  }, []);
  return { data, error, loading, reload, set };
}
