// The backend's JSON shapes (DESIGN section 4; /openapi.json is the reference).

export type ParamType = 'integer' | 'number' | 'boolean' | 'string' | 'enum';

export interface ParamSpec {
  name: string;
  type: ParamType;
  minimum?: number;
  maximum?: number;
  max_length?: number;
  values?: string[];
  default: unknown;
  description: string;
}

export interface Component {
  name: string;
  version: string;
  description: string;
  grpc_method: string;
  parameters: ParamSpec[];
}

export interface RetryPolicy {
  maxRetries: number;
  backoffFactor: number;
}

/** Run this component instead when the step still fails after its retries. */
export interface FallbackDefinition {
  componentName: string;
  parameters: Record<string, unknown>;
}

/**
 * The index signatures stand for keys the canvas has no editor for (today
 * none beyond those named; tomorrow whatever the API adds): they are carried
 * through unchanged.
 */
export interface StepDefinition {
  stepId: string;
  componentName: string;
  componentVersion?: string;
  dependencies: string[];
  parameters: Record<string, unknown>;
  resources?: unknown;
  retryPolicy?: RetryPolicy;
  timeoutSeconds?: number;
  continueOnFailure?: boolean;
  fallback?: FallbackDefinition;
  [key: string]: unknown;
}

export interface PipelineMetadata {
  createdBy?: string;
  createdAt?: string;
  description?: string;
  [key: string]: unknown;
}

export interface PipelineDefinition {
  pipelineId?: string;
  pipelineName: string;
  version: string;
  metadata?: PipelineMetadata;
  steps: StepDefinition[];
  globalParameters?: Record<string, unknown>;
  timeoutSeconds?: number;
  [key: string]: unknown;
}

export interface StoredPipeline extends PipelineDefinition {
  pipelineId: string;
  revision: number;
  createdAt: string;
  updatedAt: string;
}

export interface FileRecord {
  file_id: string;
  bucket: string;
  object_key: string;
  content_type: string;
  size_bytes: number;
  width: number;
  height: number;
  filename?: string | null;
  execution_id?: string | null;
  created_at: string;
}

/** `partially_failed`: some of the execution's inputs completed, some failed. */
export type ExecutionStatus = 'pending' | 'running' | 'completed' | 'failed' | 'cancelled' | 'partially_failed';
/** One input's run through the pipeline never ends partly. */
export type InputStatus = Exclude<ExecutionStatus, 'partially_failed'>;
export type StepStatus =
  | 'pending'
  | 'running'
  | 'retrying'
  | 'completed'
  | 'failed'
  | 'skipped'
  | 'cancelled';

export interface BoundingBox {
  x1: number;
  y1: number;
  x2: number;
  y2: number;
}

export interface Detection {
  class_name: string;
  class_id: number;
  confidence: number;
  bbox: BoundingBox;
}

export interface StepOutput {
  file_id: string;
  bucket: string;
  object_key: string;
  content_type: string;
  size_bytes: number;
  width: number;
  height: number;
}

/** One step's run on one input: `steps` holds every step of every input. */
export interface StepRecord {
  stepId: string;
  /** 0-based position of the input in the execution's inputs. */
  input_index: number;
  componentName: string;
  status: StepStatus;
  level: number;
  attempts: number;
  started_at: string | null;
  finished_at: string | null;
  processing_time_ms: number | null;
  service_time_ms: number | null;
  error: string | null;
  used_fallback?: boolean;
  output: StepOutput | null;
  detections?: Detection[];
}

export interface ExecutionRecord {
  execution_id: string;
  pipelineId: string | null;
  pipeline_revision: number | null;
  status: ExecutionStatus;
  trace_id: string | null;
  inputs: string[];
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  execution_time_ms: number | null;
  error: string | null;
  steps: StepRecord[];
  /** One per input, in the order the execution named them. */
  input_results: InputResult[];
}

/** One input of an execution, run through the whole pipeline as its own unit of work. */
export interface InputResult {
  index: number;
  /** As the request named it: a file_id or an s3://bucket/key reference. */
  input: string;
  bucket: string;
  object_key: string;
  status: InputStatus;
  started_at: string | null;
  finished_at: string | null;
  execution_time_ms: number | null;
  error: string | null;
  /** The input's final image (`output.file_id` downloads it). */
  output: StepOutput | null;
  /** `bucket/key` copies, when the pipeline has an outputPath. */
  copied_to?: string[];
}

/**
 * A step's transition (`step_id` and `input_index`), one input's start or end
 * (`input_index` only), or the execution's own (neither).
 */
export interface ProgressEvent {
  execution_id: string;
  step_id?: string;
  input_index?: number;
  status: string;
  message: string;
  timestamp: string;
  attempt?: number;
  processing_time_ms?: number;
  /** `bucket/key` of the final image, on the end of an input or execution. */
  output_path?: string;
}

export interface ReadinessCheck {
  name: string;
  ok: boolean;
  error?: string;
}

export interface Readiness {
  ready: boolean;
  checks: ReadinessCheck[];
}

export interface UiConfig {
  version: string;
  jaegerUiUrl: string | null;
}

export const TERMINAL: ReadonlySet<string> = new Set(['completed', 'failed', 'cancelled', 'partially_failed']);
