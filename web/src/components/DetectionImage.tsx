import { useFileUrl } from '../hooks';
import type { Detection } from '../types';

export function classColor(classId: number): string {
  return `hsl(${(classId * 47 + 200) % 360} 85% 55%)`;
}

interface Props {
  fileId: string;
  width: number;
  height: number;
  alt: string;
  detections?: Detection[];
}

/**
 * An image with its detections drawn over it as SVG, in the image's own
 * pixel space (the boxes come in the pixels of the image detection saw).
 */
export function DetectionImage({ fileId, width, height, alt, detections = [] }: Props) {
  const { url, error } = useFileUrl(fileId);
  const w = width || 1;
  const h = height || 1;
  const font = Math.max(10, Math.round(w / 45));
  return (
    <div class="det-wrap" style={{ aspectRatio: `${w} / ${h}` }}>
      {error && (
        <p class="banner error" role="alert">
          Cannot load the image: {error}
        </p>
      )}
      {url && <img src={url} alt={alt} width={w} height={h} />}
      {!url && !error && <div class="img-loading" aria-label="loading image" />}
      {detections.length > 0 && (
        <svg
          class="det-overlay"
          viewBox={`0 0 ${w} ${h}`}
          preserveAspectRatio="none"
          role="img"
          aria-label={`${detections.length} detection${detections.length === 1 ? '' : 's'}: ${detections
            .map((d) => `${d.class_name} ${(d.confidence * 100).toFixed(0)}%`)
            .join(', ')}`}
        >
          {detections.map((d, i) => {
            const { x1, y1, x2, y2 } = d.bbox;
            const color = classColor(d.class_id);
            const label = `${d.class_name} ${d.confidence.toFixed(2)}`;
            const labelW = label.length * font * 0.6 + font * 0.6;
            const above = y1 - font * 1.3 >= 0;
            const ly = above ? y1 - font * 1.3 : y1;
            return (
              <g key={i} class="det" data-class={d.class_name}>
                <rect
                  class="det-box"
                  data-class={d.class_name}
                  x={x1}
                  y={y1}
                  width={Math.max(0, x2 - x1)}
                  height={Math.max(0, y2 - y1)}
                  stroke={color}
                  vector-effect="non-scaling-stroke"
                />
                <rect class="det-label-bg" x={x1} y={ly} width={labelW} height={font * 1.3} fill={color} />
                <text class="det-label" x={x1 + font * 0.3} y={ly + font} font-size={font}>
                  {label}
                </text>
              </g>
            );
          })}
        </svg>
      )}
    </div>
  );
}
