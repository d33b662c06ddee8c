import { useCallback, useEffect, useState } from "react";
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
  useEffect(() => {
    if (path === null) return;
    let alive = true;
    setLoading(true);
    api<T>(path).then(
      (d) => {
        if (!alive) return;
        setData(d);
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
  }, [path, tick]);
  useEffect(() => {
    if (path === null || !everyMs) return;
    const timer = setInterval(() => {
      if (document.visibilityState !== "visible") return;
      api<T>(path).then(setData, () => undefined); // a failed refresh keeps what is shown
    }, everyMs);
    return () => clearInterval(timer);
  }, [path, everyMs]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { data, error, loading, reload, set: setData };
}
