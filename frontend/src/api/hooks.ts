import { useCallback, useEffect, useMemo, useRef, useState } from "react";
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
  // A refresh sent before a pause was saved and answered after the reload would otherwise
  // put the old state back on screen.
  const newest = useNewest();
  const show = useCallback((n: number, d: T) => newest.take(n) && setData(d), [newest]);
  useEffect(() => {
    if (path === null) return;
    let alive = true;
    const n = newest.next();
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
  }, [path, tick, show, newest]);
  useEffect(() => {
    if (path === null || !everyMs) return;
    let alive = true; // a refresh of the previous path is never shown
    const timer = setInterval(() => {
      if (document.visibilityState !== "visible") return;
      const n = newest.next();
      api<T>(path).then((d) => alive && show(n, d), () => undefined); // a failed refresh keeps what is shown
    }, everyMs);
    return () => {
      alive = false;
      clearInterval(timer);
    };
  }, [path, everyMs, show, newest]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  const set = useCallback((d: T) => {
    newest.take(newest.next()); // what was set beats every answer still on its way
    setData(d);
  }, [newest]);
  return { data, error, loading, reload, set };
}

/** Requests numbered as they are sent (`next`), and whether an answer may be shown (`take`):
 * only if no request sent later has had its answer shown. Answers come back in any order, and
 * a late one (a periodic refresh sent before a change) must not put older data back. */
export function useNewest(): { next: () => number; take: (n: number) => boolean } {
  const seq = useRef({ sent: 0, shown: 0 });
  return useMemo(() => ({
    next: () => ++seq.current.sent,
    take: (n: number) => {
      if (n <= seq.current.shown) return false;
      seq.current.shown = n;
      return true;
    },
  }), []);
}
