import { fmtMs } from '../format';
import { ganttOf } from '../stats';
import type { ExecutionRecord } from '../types';

const ROW = 28;
const TOP = 18;
const LABEL = 150;
const WIDTH = 900;

/** Per-step timings on one time axis, the parallel levels shaded. */
export function Gantt({ record }: { record: ExecutionRecord }) {
  const gantt = ganttOf(record);
  if (!gantt) return <p class="empty">No step has started yet.</p>;
  const plot = WIDTH - LABEL - 70;
  const x = (ms: number) => LABEL + (ms / gantt.spanMs) * plot;
  const height = TOP + gantt.bars.length * ROW + 22;
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => f * gantt.spanMs);
  return (
    <figure class="gantt">
      <svg
        viewBox={`0 0 ${WIDTH} ${height}`}
        role="img"
        aria-label={`Step timeline over ${fmtMs(gantt.spanMs)}: ${gantt.bars
          .map((b) => `${b.stepId} level ${b.level} ${b.status} ${fmtMs(b.durationMs)}`)
          .join('; ')}`}
      >
        {gantt.levels.map((l, i) => (
          <g key={l.level} class="gantt-level">
            <rect
              x={x(l.startMs)}
              y={0}
              width={Math.max(2, x(l.endMs) - x(l.startMs))}
              height={height - 20}
              class={i % 2 ? 'band odd' : 'band'}
            />
            <text x={x(l.startMs) + 3} y={12} class="gantt-level-label">
              level {l.level}
            </text>
          </g>
        ))}
        {gantt.bars.map((b, i) => (
          <g key={b.stepId} class="gantt-row" data-step-id={b.stepId}>
            <text x={4} y={TOP + i * ROW + 19} class="gantt-name">
              {b.stepId}
            </text>
            <rect
              x={x(b.startMs)}
              y={TOP + i * ROW + 6}
              width={Math.max(2, x(b.startMs + b.durationMs) - x(b.startMs))}
              height={ROW - 10}
              rx={3}
              class={`gantt-bar bar-${b.status}`}
            />
            <text x={x(b.startMs + b.durationMs) + 4} y={TOP + i * ROW + 19} class="gantt-time">
              {fmtMs(b.durationMs)}
              {b.attempts > 1 ? ` ×${b.attempts}` : ''}
            </text>
          </g>
        ))}
        {ticks.map((t) => (
          <text key={t} x={x(t)} y={height - 2} class="gantt-tick" text-anchor="middle">
            {fmtMs(t)}
          </text>
        ))}
      </svg>
    </figure>
  );
}
