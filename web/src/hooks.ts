import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError } from './api';
import { readEventStream } from './sse';
import { applyProgress, endsAnInput, isFinalEvent, withRecorded } from './progress';
import type { ExecutionRecord, ProgressEvent } from './types';
import { TERMINAL } from './types';

/** Object URLs of downloaded files, kept for the session (bounded). */
const blobUrls = new Map<string, Promise<string>>();
const MAX_CACHED = 200;

export function fileUrl(fileId: string): Promise<string> {
  let url = blobUrls.get(fileId);
  if (!url) {
    url = api.download(fileId).then((blob) => URL.createObjectURL(blob));
    url.catch(() => blobUrls.delete(fileId));
    blobUrls.set(fileId, url);
    if (blobUrls.size > MAX_CACHED) {
      const [oldest, value] = blobUrls.entries().next().value as [string, Promise<string>];
      blobUrls.delete(oldest);
      value.then((u) => URL.revokeObjectURL(u)).catch(() => undefined);
    }
  }
  return url;
}

export function useFileUrl(fileId: string | null | undefined): { url: string | null; error: string | null } {
  const [state, setState] = useState<{ url: string | null; error: string | null }>({ url: null, error: null });
  useEffect(() => {
    if (!fileId) return undefined;
    let live = true;
    setState({ url: null, error: null });
    fileUrl(fileId).then(
      (url) => live && setState({ url, error: null }),
      (e: Error) => live && setState({ url: null, error: e.message }),
    );
    return () => {
      live = false;
    };
  }, [fileId]);
  return state;
}

export interface Watch {
  record: ExecutionRecord | null;
  error: string | null;
  live: boolean;
}

/**
 * An execution kept current: the SSE stream's snapshot and progress events,
 * then the full record (outputs, detections) once it ends. Reconnects while
 * the execution is still going.
 */
export function useExecution(id: string | null, onFinished?: (r: ExecutionRecord) => void): Watch {
  const [watch, setWatch] = useState<Watch>({ record: null, error: null, live: false });
  const finished = useRef(onFinished);
  finished.current = onFinished;
  useEffect(() => {
    if (!id) {
      setWatch({ record: null, error: null, live: false });
      return undefined;
    }
    const abort = new AbortController();
    let current: ExecutionRecord | null = null;
    const set = (record: ExecutionRecord | null, live: boolean, error: string | null = null) => {
      current = record;
      if (!abort.signal.aborted) setWatch({ record, error, live });
    };
    setWatch({ record: null, error: null, live: true });
    // An input's output is not in its event: fetch the record when inputs end,
    // one fetch at a time (a burst of ends makes one more, not one each).
    let fetching = false;
    let again = false;
    const fetchOutputs = async () => {
      if (fetching) {
        again = true;
        return;
      }
      fetching = true;
      do {
        again = false;
        try {
          const full = await api.getExecution(id);
          if (current && !TERMINAL.has(current.status)) set(withRecorded(current, full), true);
        } catch {
          // The next end, or the final fetch, brings them.
        }
      } while (again && !abort.signal.aborted);
      fetching = false;
    };
    (async () => {
      for (let attempt = 0; attempt < 60 && !abort.signal.aborted; attempt += 1) {
        try {
          await readEventStream(
            `/v1/executions/${encodeURIComponent(id)}/events`,
            (event) => {
              if (event.event === 'snapshot') set(JSON.parse(event.data) as ExecutionRecord, true);
              else if (event.event === 'progress' && current) {
                const progress = JSON.parse(event.data) as ProgressEvent;
                set(applyProgress(current, progress), !isFinalEvent(progress));
                if (endsAnInput(progress)) fetchOutputs();
              }
            },
            abort.signal,
          );
        } catch (e) {
          if (abort.signal.aborted) return;
          if (e instanceof ApiError && (e.status === 404 || e.status === 401)) {
            set(current, false, e.message);
            return;
          }
        }
        if (abort.signal.aborted) return;
        try {
          const full = await api.getExecution(id);
          if (TERMINAL.has(full.status)) {
            set(full, false);
            finished.current?.(full);
            return;
          }
          set(full, true);
        } catch (e) {
          if (abort.signal.aborted) return;
          set(current, true, (e as Error).message);
        }
        await new Promise((r) => setTimeout(r, 1000));
      }
    })();
    return () => abort.abort();
  }, [id]);
  return watch;
}

/** Calls `fn` now and every `ms` while `enabled`. */
export function usePolling(fn: () => void, ms: number, enabled: boolean, deps: unknown[]): void {
  const saved = useRef(fn);
  saved.current = fn;
  useEffect(() => {
    saved.current();
    if (!enabled) return undefined;
    const t = setInterval(() => saved.current(), ms);
    return () => clearInterval(t);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [ms, enabled, ...deps]);
}
