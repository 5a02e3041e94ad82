import { describe, expect, it } from 'vitest';
import { defaultParams, inputStep, paramError, paramErrors, parseInput } from '../src/params';
import { components } from './fixtures';

const [resize, detect, filter] = components;
const spec = (c: typeof resize, name: string) => c.parameters.find((p) => p.name === name)!;

describe('parameter forms', () => {
  it('start from the registry defaults', () => {
    expect(defaultParams(detect)).toEqual({
      model_name: 'yolo',
      confidence_threshold: 0.5,
      nms_threshold: 0.4,
      draw_boxes: true,
    });
    expect(defaultParams(filter)).toEqual({ filter_type: 'gaussian', intensity: 1 });
  });

  it('parse what is typed, keeping unparseable text for the error', () => {
    expect(parseInput(spec(resize, 'width'), '320')).toBe(320);
    expect(parseInput(spec(resize, 'width'), ' 12 ')).toBe(12);
    expect(parseInput(spec(resize, 'width'), '')).toBe('');
    expect(parseInput(spec(detect, 'confidence_threshold'), '0.25')).toBe(0.25);
    expect(parseInput(spec(resize, 'maintain_aspect_ratio'), false)).toBe(false);
    expect(parseInput(spec(detect, 'model_name'), 'yolo11n')).toBe('yolo11n');
  });

  it('check ranges and types the way the backend does', () => {
    expect(paramError(spec(resize, 'width'), 800)).toBeNull();
    expect(paramError(spec(resize, 'width'), 800.5)).toMatch(/whole/);
    expect(paramError(spec(resize, 'width'), -1)).toMatch(/at least 0/);
    expect(paramError(spec(resize, 'width'), '')).toMatch(/number/);
    expect(paramError(spec(detect, 'confidence_threshold'), 1.5)).toMatch(/at most 1/);
    expect(paramError(spec(filter, 'filter_type'), 'SHARPEN')).toBeNull();
    expect(paramError(spec(filter, 'filter_type'), 'sepia')).toMatch(/one of/);
    expect(paramError(spec(detect, 'model_name'), '')).toMatch(/empty/);
    expect(paramErrors(resize, { width: 'x', height: 600 })).toEqual({ width: 'width must be a number' });
  });

  it('step number inputs by the size of their range', () => {
    expect(inputStep(spec(resize, 'width'))).toBe('1');
    expect(inputStep(spec(detect, 'confidence_threshold'))).toBe('0.05');
    expect(inputStep(spec(filter, 'intensity'))).toBe('0.1');
  });
});
