// Parameter forms from the registry's schemas: defaults, parsing what was
// typed, and the same range checks the backend makes (the backend stays the
// judge; this only spares a round trip for an obvious typo).

import type { Component, ParamSpec } from './types';

export function defaultParams(component: Component): Record<string, unknown> {
  return Object.fromEntries(component.parameters.map((p) => [p.name, p.default]));
}

/** What was typed, as the JSON value to send (unparseable text stays text). */
export function parseInput(spec: ParamSpec, raw: string | boolean): unknown {
  if (spec.type === 'boolean') return Boolean(raw);
  const text = String(raw);
  if (spec.type === 'integer' || spec.type === 'number') {
    const trimmed = text.trim();
    if (trimmed === '') return text;
    const n = Number(trimmed);
    return Number.isFinite(n) ? n : text;
  }
  return text;
}

export function paramError(spec: ParamSpec, value: unknown): string | null {
  switch (spec.type) {
    case 'integer':
    case 'number': {
      if (typeof value !== 'number' || !Number.isFinite(value)) return `${spec.name} must be a number`;
      if (spec.type === 'integer' && !Number.isInteger(value)) return `${spec.name} must be a whole number`;
      if (spec.minimum !== undefined && value < spec.minimum) return `${spec.name} must be at least ${spec.minimum}`;
      if (spec.maximum !== undefined && value > spec.maximum) return `${spec.name} must be at most ${spec.maximum}`;
      return null;
    }
    case 'boolean':
      return typeof value === 'boolean' ? null : `${spec.name} must be true or false`;
    case 'string': {
      if (typeof value !== 'string' || value.length === 0) return `${spec.name} must not be empty`;
      if (spec.max_length !== undefined && value.length > spec.max_length) {
        return `${spec.name} must be at most ${spec.max_length} characters`;
      }
      return null;
    }
    case 'enum':
      return typeof value === 'string' && (spec.values ?? []).includes(value.toLowerCase())
        ? null
        : `${spec.name} must be one of ${(spec.values ?? []).join(', ')}`;
    default:
      return null;
  }
}

/** Errors of one step's parameters, by parameter name. */
export function paramErrors(
  component: Component | undefined,
  params: Record<string, unknown>,
): Record<string, string> {
  if (!component) return {};
  const errors: Record<string, string> = {};
  for (const spec of component.parameters) {
    const e = paramError(spec, params[spec.name] ?? spec.default);
    if (e) errors[spec.name] = e;
  }
  return errors;
}

/** The `step` attribute of a number input. */
export function inputStep(spec: ParamSpec): string {
  if (spec.type === 'integer') return '1';
  const range = (spec.maximum ?? 1) - (spec.minimum ?? 0);
  return range <= 1 ? '0.05' : '0.1';
}
