// The one way the UI talks to the server: the public REST API under /api/v1 (STYLE §11).
// Response types come from the server's OpenAPI document (schema.d.ts, generated).
import type { components } from "./schema";

type S = components["schemas"];
export type PipelineOut = S["PipelineOut"];
export type PipelinePage = S["PipelinePage"];
export type PipelineDetailOut = S["PipelineDetailOut"];
export type RunOut = S["RunOut"];
export type RunBriefOut = S["RunBriefOut"];
export type RunDetailOut = S["RunDetailOut"];
export type TaskInstanceOut = S["TaskInstanceOut"];
export type TaskNodeOut = S["TaskNodeOut"];
export type EdgeOut = S["EdgeOut"];
export type Page<T> = { items: T[]; next_cursor?: string | null };

export const API = "/api/v1";
const TOKEN_KEY = "cadenza.token";

export function getToken(): string | null {
  return localStorage.getItem(TOKEN_KEY);
}

export function setToken(token: string | null): void {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

/** A 4xx/5xx answer: the server's `detail` (what went wrong) and `hint` (the fix). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly hint: string | null = null,
    readonly fields: { loc: (string | number)[]; msg: string }[] = [],
  ) {
    super(message);
  }
}

export function authHeaders(): Record<string, string> {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export async function api<T>(path: string, init: RequestInit & { json?: unknown } = {}): Promise<T> {
  const { json, ...rest } = init;
  const headers: Record<string, string> = { Accept: "application/json", ...authHeaders() };
  if (json !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(API + path, {
    ...rest,
    headers: { ...headers, ...(rest.headers as Record<string, string> | undefined) },
    body: json !== undefined ? JSON.stringify(json) : rest.body,
  });
  if (res.status === 401) window.dispatchEvent(new Event("cadenza:unauthorized"));
  if (!res.ok) {
    let detail: unknown = res.statusText;
    let hint: string | null = null;
    try {
      const body = await res.json();
      detail = body.detail ?? detail;
      hint = body.hint ?? null;
    } catch {
      // not JSON: keep the status text
    }
    if (Array.isArray(detail)) {
      const fields = detail as { loc: (string | number)[]; msg: string }[];
      const text = fields.map((f) => `${f.loc.filter((l) => l !== "body").join(".")}: ${f.msg}`);
      throw new ApiError(res.status, text.join("; "), hint, fields);
    }
    throw new ApiError(res.status, String(detail), hint);
  }
  if (res.status === 204) return undefined as T;
  return (await res.json()) as T;
}

export const enc = encodeURIComponent;
