// Dates, durations and schedules as people read them.
import cronstrue from "cronstrue";

export function fmtDate(iso: string | null | undefined): string {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleString(undefined, {
    year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

export function fmtRelative(iso: string | null | undefined, now: number = Date.now()): string {
  if (!iso) return "–";
  const s = (new Date(iso).getTime() - now) / 1000;
  const a = Math.abs(s);
  const [n, unit] =
    a < 60 ? [a, "s"] : a < 3600 ? [a / 60, "min"] : a < 86400 ? [a / 3600, "h"] : [a / 86400, "d"];
  const text = `${Math.round(n)} ${unit}`;
  return s >= 0 ? `in ${text}` : `${text} ago`;
}

export function fmtDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 0.001) return "<1 ms";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

const PRESETS: Record<string, string> = {
  "@hourly": "Every hour",
  "@daily": "Every day at 00:00",
  "@midnight": "Every day at 00:00",
  "@weekly": "Every Sunday at 00:00",
  "@monthly": "On day 1 of every month at 00:00",
  "@yearly": "Every year on January 1 at 00:00",
  "@annually": "Every year on January 1 at 00:00",
};

/** "0 6 * * 1-5" -> "At 06:00, Monday through Friday"; null when not a cron schedule. */
export function humanSchedule(schedule: string | null | undefined): string | null {
  if (!schedule) return null;
  if (PRESETS[schedule]) return PRESETS[schedule];
  try {
    return cronstrue.toString(schedule, { use24HourTimeFormat: true, verbose: false });
  } catch {
    return null;
  }
}

export function shortId(id: string): string {
  return id.length > 12 ? id.slice(0, 8) : id;
}

/** When a pipeline's next scheduled run comes: "paused", "due now" (the scheduler's next
 * tick creates it), "in 5 h", or "–" when it has no time schedule. */
export function nextRunText(nextRunAt: string | null | undefined, paused: boolean | undefined, now: number = Date.now()): string {
  if (paused) return "paused";
  if (!nextRunAt) return "–";
  return Date.parse(nextRunAt) <= now ? "due now" : fmtRelative(nextRunAt, now);
}

/** A pipeline's non-time trigger as the API names it ("Asset(name='x')") in words. */
export function triggerText(trigger: string): string {
  const asset = /^Asset\(name='([^']*)'/.exec(trigger);
  return asset ? `on asset ${asset[1]}` : trigger;
}
