import { useState } from 'preact/hooks';
import { api } from '../api';
import { fmtMs, fmtPercent } from '../format';
import { usePolling } from '../hooks';
import { histogramQuantile, parsePrometheus, type Sample, sum, sumBy } from '../metrics';
import { windowStats, type WindowStats } from '../stats';
import type { ExecutionRecord, Readiness } from '../types';

const WINDOWS = [5, 15, 60];
const MAX_PAGES = 10;

/** Executions created within the window, newest first (pages of 200). */
async function recentExecutions(minutes: number): Promise<{ records: ExecutionRecord[]; truncated: boolean }> {
  const since = Date.now() - minutes * 60_000;
  const records: ExecutionRecord[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < MAX_PAGES; page += 1) {
    const r = await api.listExecutions({ limit: 200, cursor });
    records.push(...r.executions);
    const oldest = r.executions[r.executions.length - 1];
    if (!r.next_cursor || !oldest || Date.parse(oldest.created_at) < since) return { records, truncated: false };
    cursor = r.next_cursor;
  }
  return { records, truncated: true };
}

function Bars({ values, label }: { values: number[]; label: string }) {
  const max = Math.max(1, ...values);
  const w = 6;
  return (
    <svg class="bars" viewBox={`0 0 ${values.length * (w + 2)} 40`} preserveAspectRatio="none" role="img" aria-label={label}>
      {values.map((v, i) => (
        <rect key={i} x={i * (w + 2)} y={40 - (v / max) * 38} width={w} height={(v / max) * 38 + (v ? 0 : 1)} class={v ? 'bar' : 'bar zero'} />
      ))}
    </svg>
  );
}

function Tile({ title, value, detail, testid }: { title: string; value: string; detail?: preact.ComponentChildren; testid: string }) {
  return (
    <div class="tile" data-tile={testid}>
      <h3>{title}</h3>
      <p class="tile-value">{value}</p>
      {detail && <div class="tile-detail">{detail}</div>}
    </div>
  );
}

/**
 * Throughput, success rate and latency from the executions API (every
 * replica's work, as they share the database), this replica's counters from
 * /metrics, and each dependency's health from /readyz.
 */
export function DashboardPage() {
  const [minutes, setMinutes] = useState(15);
  const [stats, setStats] = useState<WindowStats | null>(null);
  const [truncated, setTruncated] = useState(false);
  const [statsError, setStatsError] = useState<string | null>(null);
  const [samples, setSamples] = useState<Sample[] | null>(null);
  const [metricsError, setMetricsError] = useState<string | null>(null);
  const [ready, setReady] = useState<Readiness | null>(null);
  const [readyError, setReadyError] = useState<string | null>(null);
  const [updated, setUpdated] = useState<Date | null>(null);

  usePolling(
    () => {
      recentExecutions(minutes).then(
        ({ records, truncated: t }) => {
          setStats(windowStats(records, Date.now(), minutes));
          setTruncated(t);
          setStatsError(null);
          setUpdated(new Date());
        },
        (e: Error) => setStatsError(e.message),
      );
      api.metricsText().then(
        (text) => {
          setSamples(parsePrometheus(text));
          setMetricsError(null);
        },
        (e: Error) => setMetricsError(e.message),
      );
      api.readiness().then(
        (r) => {
          setReady(r);
          setReadyError(null);
        },
        (e: Error) => setReadyError(e.message),
      );
    },
    5000,
    true,
    [minutes],
  );

  const byStatus = samples ? sumBy(samples, 'pipeline_executions_total', 'status') : new Map<string, number>();
  const p95Replica = samples ? histogramQuantile(0.95, samples, 'imageflow_pipeline_execution_duration_seconds') : null;
  const http5xx = samples
    ? samples.filter((s) => s.name === 'http_requests_total' && s.labels.code?.startsWith('5')).reduce((a, s) => a + s.value, 0)
    : 0;
  const grpcErrors = samples ? sumBy(samples, 'imageflow_grpc_client_errors_total', 'service') : new Map<string, number>();
  const stepTotals = samples ? sumBy(samples, 'imageflow_step_executions_total', 'step_type') : new Map<string, number>();
  const stepFailed = (type: string) =>
    samples ? sum(samples, 'imageflow_step_executions_total', { step_type: type, status: 'failed' }) : 0;

  return (
    <div class="page">
      <h1>Dashboard</h1>
      <div class="row wrap">
        <div class="field compact narrow">
          <label for="d-window">Window</label>
          <select id="d-window" value={String(minutes)} onChange={(e) => setMinutes(Number((e.target as HTMLSelectElement).value))}>
            {WINDOWS.map((w) => (
              <option key={w} value={w}>
                last {w} min
              </option>
            ))}
          </select>
        </div>
        <p class="muted" role="status">
          {updated ? `Updated ${updated.toLocaleTimeString()} · refreshes every 5 s` : 'Loading…'}
        </p>
      </div>

      <section aria-labelledby="d-all">
        <h2 id="d-all">All replicas (executions API)</h2>
        {statsError && (
          <p class="banner error" role="alert">
            Cannot read executions: {statsError}
          </p>
        )}
        {stats && stats.total === 0 && (
          <p class="empty" data-empty="dashboard">
            No executions in the last {minutes} minutes. <a href="#/">Run a pipeline</a> to see figures here.
          </p>
        )}
        {stats && (
          <div class="tiles">
            <Tile
              testid="rate"
              title="Executions per minute"
              value={stats.ratePerMinute.toFixed(stats.ratePerMinute < 10 ? 2 : 0)}
              detail={
                <>
                  <Bars values={stats.perMinute} label={`executions per minute, oldest first: ${stats.perMinute.join(', ')}`} />
                  <span class="muted">
                    {stats.total} in {minutes} min{truncated ? ' (at least: only the newest 2000 read)' : ''}
                  </span>
                </>
              }
            />
            <Tile
              testid="success"
              title="Success rate"
              value={fmtPercent(stats.successRate)}
              detail={
                <span class="muted">
                  {stats.completed} completed · {stats.failed} failed ·{' '}
                  {stats.partiallyFailed ? `${stats.partiallyFailed} partly failed · ` : ''}
                  {stats.cancelled} cancelled · {stats.running} running
                </span>
              }
            />
            <Tile
              testid="p95"
              title="p95 latency"
              value={fmtMs(stats.p95Ms)}
              detail={<span class="muted">p50 {fmtMs(stats.p50Ms)} (completed executions, queueing excluded)</span>}
            />
          </div>
        )}
      </section>

      <section aria-labelledby="d-health">
        <h2 id="d-health">Service health</h2>
        {readyError && (
          <p class="banner error" role="alert">
            Cannot reach /readyz: {readyError}
          </p>
        )}
        {ready && (
          <>
            <p data-ready={ready.ready ? 'yes' : 'no'}>
              {ready.ready ? 'Everything the backend depends on answers.' : 'Something the backend depends on is down:'}
            </p>
            <ul class="health">
              {ready.checks.map((c) => {
                const service = c.name.replace(/^service:/, '');
                const type = service;
                return (
                  <li key={c.name} class={c.ok ? 'ok' : 'down'} data-check={c.name} data-ok={c.ok ? 'yes' : 'no'}>
                    <span class="badge-dot" aria-hidden="true" />
                    <strong>{c.name}</strong> {c.ok ? 'up' : 'down'}
                    {c.error && <span class="muted"> · {c.error}</span>}
                    {c.name.startsWith('service:') && samples && (
                      <span class="muted">
                        {' '}
                        · {stepTotals.get(type) ?? 0} steps, {stepFailed(type)} failed, {grpcErrors.get(service) ?? 0} call errors
                      </span>
                    )}
                  </li>
                );
              })}
            </ul>
          </>
        )}
      </section>

      <section aria-labelledby="d-replica">
        <h2 id="d-replica">This replica (/metrics, since it started)</h2>
        {metricsError && (
          <p class="banner error" role="alert">
            Cannot read /metrics: {metricsError}
          </p>
        )}
        {samples && (
          <div class="tiles">
            <Tile
              testid="replica-total"
              title="Finished executions"
              value={String([...byStatus.values()].reduce((a, b) => a + b, 0))}
              detail={
                <span class="muted">
                  {[...byStatus.entries()].map(([k, v]) => `${v} ${k}`).join(' · ') || 'none yet'}
                </span>
              }
            />
            <Tile
              testid="replica-p95"
              title="p95 execution time"
              value={p95Replica === null ? '–' : fmtMs(p95Replica * 1000)}
              detail={<span class="muted">from the duration histogram's buckets</span>}
            />
            <Tile
              testid="replica-load"
              title="Running / queued"
              value={`${sum(samples, 'imageflow_executions_running')} / ${sum(samples, 'imageflow_executions_queued')}`}
              detail={<span class="muted">{http5xx} HTTP 5xx answers</span>}
            />
          </div>
        )}
      </section>
    </div>
  );
}
