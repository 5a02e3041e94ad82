const LABELS: Record<string, string> = {
  pending: 'pending',
  running: 'running',
  retrying: 'retrying',
  completed: 'completed',
  failed: 'failed',
  skipped: 'skipped',
  cancelled: 'cancelled',
  // Some inputs completed, some failed: neither a success nor a total failure.
  partially_failed: 'partly failed',
};

export function StatusBadge({ status, attempts }: { status: string; attempts?: number }) {
  const retried = attempts !== undefined && attempts > 1;
  return (
    <span class={`badge badge-${status}`} data-status={status}>
      <span class="badge-dot" aria-hidden="true" />
      {LABELS[status] ?? status}
      {retried && status !== 'retrying' ? ` after ${attempts} attempts` : ''}
      {status === 'retrying' && attempts ? ` (attempt ${attempts})` : ''}
    </span>
  );
}
