// Log text with ANSI SGR colours (bold, 8/16 foreground colours, reset) as spans, and the
// lines matching a search highlighted. Anything else in an escape sequence is dropped.
import type { ReactNode } from "react";

type Style = { fg: number | null; bold: boolean };
// eslint-disable-next-line no-control-regex
const SGR = /\x1b\[([0-9;]*)m/g;
// eslint-disable-next-line no-control-regex
const OTHER = /\x1b\[[0-9;?]*[A-Za-z]/g;

function apply(style: Style, codes: string): Style {
  const next = { ...style };
  for (const c of (codes || "0").split(";").map(Number)) {
    if (c === 0) {
      next.fg = null;
      next.bold = false;
    } else if (c === 1) next.bold = true;
    else if (c === 22) next.bold = false;
    else if ((c >= 30 && c <= 37) || (c >= 90 && c <= 97)) next.fg = c;
    else if (c === 39) next.fg = null;
  }
  return next;
}

function highlight(text: string, needle: string, key: string): ReactNode[] {
  if (!needle) return [text];
  const out: ReactNode[] = [];
  const lower = text.toLowerCase();
  let at = 0;
  let i: number;
  while ((i = lower.indexOf(needle, at)) >= 0) {
    if (i > at) out.push(text.slice(at, i));
    out.push(<mark key={`${key}-${i}`}>{text.slice(i, i + needle.length)}</mark>);
    at = i + needle.length;
  }
  if (at < text.length) out.push(text.slice(at));
  return out;
}

export function AnsiLine({ line, search, index }: { line: string; search: string; index: number }) {
  const parts: ReactNode[] = [];
  let style: Style = { fg: null, bold: false };
  let last = 0;
  let m: RegExpExecArray | null;
  SGR.lastIndex = 0;
  const push = (text: string, k: number) => {
    const clean = text.replace(OTHER, "");
    if (!clean) return;
    const cls = [style.fg ? `ansi-${style.fg}` : "", style.bold ? "ansi-bold" : ""].filter(Boolean).join(" ");
    const body = highlight(clean, search, `${index}-${k}`);
    parts.push(cls ? <span key={k} className={cls}>{body}</span> : <span key={k}>{body}</span>);
  };
  while ((m = SGR.exec(line))) {
    push(line.slice(last, m.index), m.index);
    style = apply(style, m[1]);
    last = m.index + m[0].length;
  }
  push(line.slice(last), line.length + 1);
  return <div className="log-line">{parts.length ? parts : " "}</div>;
}
