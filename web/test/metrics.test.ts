import { describe, expect, it } from 'vitest';
import { histogramQuantile, parsePrometheus, sum, sumBy } from '../src/metrics';

// As crates/backend-api/src/metrics.rs renders it.
const TEXT = `# HELP pipeline_executions_total finished pipeline executions by status
# TYPE pipeline_executions_total counter
pipeline_executions_total{status="completed"} 9
pipeline_executions_total{status="failed"} 1
# TYPE imageflow_pipeline_execution_duration_seconds histogram
imageflow_pipeline_execution_duration_seconds_bucket{status="completed",le="0.05"} 2
imageflow_pipeline_execution_duration_seconds_bucket{status="completed",le="0.1"} 6
imageflow_pipeline_execution_duration_seconds_bucket{status="completed",le="0.25"} 9
imageflow_pipeline_execution_duration_seconds_bucket{status="completed",le="+Inf"} 9
imageflow_pipeline_execution_duration_seconds_sum{status="completed"} 1.1
imageflow_pipeline_execution_duration_seconds_count{status="completed"} 9
imageflow_pipeline_execution_duration_seconds_bucket{status="failed",le="0.05"} 0
imageflow_pipeline_execution_duration_seconds_bucket{status="failed",le="0.1"} 0
imageflow_pipeline_execution_duration_seconds_bucket{status="failed",le="0.25"} 1
imageflow_pipeline_execution_duration_seconds_bucket{status="failed",le="+Inf"} 1
imageflow_executions_running 2
http_requests_total{code="200",method="GET",route="/v1/executions/{execution_id}"} 40
http_requests_total{code="503",method="GET",route="/readyz"} 3
label_escapes{msg="a \\"quoted\\" \\\\ word"} 1
`;

describe('Prometheus text', () => {
  const samples = parsePrometheus(TEXT);

  it('parses samples with labels and escapes', () => {
    expect(sum(samples, 'imageflow_executions_running')).toBe(2);
    expect(sumBy(samples, 'pipeline_executions_total', 'status')).toEqual(
      new Map([
        ['completed', 9],
        ['failed', 1],
      ]),
    );
    expect(sum(samples, 'http_requests_total', { code: '503' })).toBe(3);
    expect(samples.find((s) => s.name === 'label_escapes')?.labels.msg).toBe('a "quoted" \\ word');
    expect(samples.find((s) => s.labels.route)?.labels.route).toBe('/v1/executions/{execution_id}');
  });

  it('interpolates quantiles within buckets, summed over labels', () => {
    // 10 observations: p50 rank 5 falls in (0.05, 0.1] holding ranks 3-6.
    expect(histogramQuantile(0.5, samples, 'imageflow_pipeline_execution_duration_seconds')).toBeCloseTo(0.0875, 6);
    // p95 rank 9.5 falls in (0.1, 0.25] holding ranks 7-10.
    expect(histogramQuantile(0.95, samples, 'imageflow_pipeline_execution_duration_seconds')).toBeCloseTo(0.23125, 6);
    expect(histogramQuantile(0.95, samples, 'missing')).toBeNull();
  });
});
