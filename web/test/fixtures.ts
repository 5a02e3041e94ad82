import type { Component } from '../src/types';

/** The registry as GET /v1/components answers it (crates/backend-api/src/registry.rs). */
export const components: Component[] = [
  {
    name: 'resize',
    version: '1.0.0',
    description: 'Resize an image',
    grpc_method: 'imageflow.v1.ResizeService/ResizeImage',
    parameters: [
      { name: 'width', type: 'integer', minimum: 0, maximum: 16384, default: 800, description: 'w' },
      { name: 'height', type: 'integer', minimum: 0, maximum: 16384, default: 600, description: 'h' },
      { name: 'maintain_aspect_ratio', type: 'boolean', default: true, description: 'fit' },
      { name: 'quality', type: 'enum', values: ['fast', 'good', 'best'], default: 'good', description: 'q' },
    ],
  },
  {
    name: 'ai_detection',
    version: '1.0.0',
    description: 'Detect objects',
    grpc_method: 'imageflow.v1.AIDetectionService/DetectObjects',
    parameters: [
      { name: 'model_name', type: 'string', max_length: 128, default: 'yolo', description: 'm' },
      { name: 'confidence_threshold', type: 'number', minimum: 0, maximum: 1, default: 0.5, description: 'c' },
      { name: 'nms_threshold', type: 'number', minimum: 0, maximum: 1, default: 0.4, description: 'n' },
      { name: 'draw_boxes', type: 'boolean', default: true, description: 'd' },
    ],
  },
  {
    name: 'filter',
    version: '1.0.0',
    description: 'Apply an image filter',
    grpc_method: 'imageflow.v1.FilterService/ApplyFilter',
    parameters: [
      {
        name: 'filter_type',
        type: 'enum',
        values: ['blur', 'sharpen', 'brightness', 'contrast', 'saturation', 'gaussian', 'grayscale'],
        default: 'gaussian',
        description: 'f',
      },
      { name: 'intensity', type: 'number', minimum: 0, maximum: 100, default: 1.0, description: 'i' },
    ],
  },
];
