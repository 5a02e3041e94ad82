// The one door to the backend: same origin, bearer token when one is set,
// errors turned into ApiError with the server's code, message and step_id.

import type {
  Component,
  ExecutionRecord,
  FileRecord,
  PipelineDefinition,
  Readiness,
  StoredPipeline,
  UiConfig,
} from './types';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly stepId: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

const TOKEN_KEY = 'imageflow.apiToken';

/** The bearer token: remembered in localStorage, or only for this tab. */
export const tokenStore = {
  get(): string | null {
    return sessionStorage.getItem(TOKEN_KEY) ?? localStorage.getItem(TOKEN_KEY);
  },
  set(token: string | null, remember: boolean): void {
    sessionStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(TOKEN_KEY);
    if (token) (remember ? localStorage : sessionStorage).setItem(TOKEN_KEY, token);
  },
};

type Listener = (error: ApiError) => void;
const unauthorizedListeners = new Set<Listener>();

/** Called on every 401, so the app can ask for a token. */
export function onUnauthorized(listener: Listener): () => void {
  unauthorizedListeners.add(listener);
  return () => unauthorizedListeners.delete(listener);
}

export function authHeaders(): Record<string, string> {
  const token = tokenStore.get();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** Turns a failed response into an ApiError (the body is `{"error": {...}}`). */
export async function errorFrom(response: Response): Promise<ApiError> {
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText}`.trim();
  let stepId: string | null = null;
  try {
    const body = await response.json();
    if (body?.error) {
      code = body.error.code ?? code;
      message = body.error.message ?? message;
      stepId = body.error.step_id ?? null;
    }
  } catch {
    // Not JSON (a proxy's page): keep the status line.
  }
  const error = new ApiError(response.status, code, message, stepId);
  if (response.status === 401) unauthorizedListeners.forEach((l) => l(error));
  return error;
}

export async function request(path: string, init: RequestInit = {}): Promise<Response> {
  let response: Response;
  try {
    response = await fetch(path, {
      ...init,
      headers: { Accept: 'application/json', ...authHeaders(), ...(init.headers ?? {}) },
    });
  } catch (e) {
    throw new ApiError(0, 'network', `cannot reach the backend (${(e as Error).message})`);
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

async function json<T>(path: string, init: RequestInit = {}): Promise<T> {
  const response = await request(path, init);
  if (response.status === 204) return undefined as T;
  return (await response.json()) as T;
}

function send<T>(method: string, path: string, body: unknown): Promise<T> {
  return json<T>(path, {
    method,
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
}

export interface ExecutionQuery {
  limit?: number;
  status?: string;
  pipelineId?: string;
  cursor?: string;
}

export function queryString(params: Record<string, string | number | undefined | null>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

export const api = {
  uiConfig: () => json<UiConfig>('/ui-config.json'),
  components: () => json<{ components: Component[] }>('/v1/components').then((r) => r.components),

  listPipelines: () =>
    json<{ pipelines: StoredPipeline[] }>('/v1/pipelines?limit=500').then((r) => r.pipelines),
  getPipeline: (id: string, revision?: number) =>
    json<StoredPipeline>(`/v1/pipelines/${encodeURIComponent(id)}${queryString({ revision })}`),
  createPipeline: (definition: PipelineDefinition) =>
    send<StoredPipeline>('POST', '/v1/pipelines', definition),
  updatePipeline: (id: string, definition: PipelineDefinition) =>
    send<StoredPipeline>('PUT', `/v1/pipelines/${encodeURIComponent(id)}`, definition),
  deletePipeline: (id: string) =>
    json<void>(`/v1/pipelines/${encodeURIComponent(id)}`, { method: 'DELETE' }),

  listFiles: (limit = 50) =>
    json<{ files: FileRecord[] }>(`/v1/files?limit=${limit}`).then((r) => r.files),
  file: (fileId: string) => json<FileRecord>(`/v1/files/${encodeURIComponent(fileId)}`),
  upload: (file: File) => {
    const form = new FormData();
    form.append('file', file, file.name);
    return json<FileRecord>('/v1/files', { method: 'POST', body: form });
  },
  /** The bytes of a file, as a blob (an <img> cannot send the token). */
  download: async (fileId: string) =>
    (await request(`/v1/files/${encodeURIComponent(fileId)}/download`, { headers: { Accept: '*/*' } })).blob(),

  startExecution: (body: {
    pipelineId?: string;
    pipeline?: PipelineDefinition;
    inputs: string[];
    parameters?: Record<string, unknown>;
  }) => send<{ execution_id: string; status: string }>('POST', '/v1/executions', body),
  listExecutions: (query: ExecutionQuery) =>
    json<{ executions: ExecutionRecord[]; next_cursor?: string }>(
      `/v1/executions${queryString({ ...query })}`,
    ),
  getExecution: (id: string) => json<ExecutionRecord>(`/v1/executions/${encodeURIComponent(id)}`),
  cancelExecution: (id: string) =>
    json<{ status: string }>(`/v1/executions/${encodeURIComponent(id)}/cancel`, { method: 'POST' }),

  /** /readyz answers 503 with the same body when something is down. */
  readiness: async (): Promise<Readiness> => {
    const response = await fetch('/readyz', { headers: { Accept: 'application/json' } });
    if (response.status !== 200 && response.status !== 503) throw await errorFrom(response);
    return (await response.json()) as Readiness;
  },
  metricsText: async () => (await request('/metrics', { headers: { Accept: 'text/plain' } })).text(),
};
