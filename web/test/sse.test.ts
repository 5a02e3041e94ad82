import { describe, expect, it } from 'vitest';
import { SseParser } from '../src/sse';

describe('SseParser', () => {
  it('parses events split across chunks, with every line ending', () => {
    const p = new SseParser();
    expect(p.feed('event: snapshot\ndata: {"a"')).toEqual([]);
    expect(p.feed(':1}\n\n')).toEqual([{ event: 'snapshot', data: '{"a":1}' }]);
    expect(p.feed('event: progress\r\ndata: x\r\n\r\ndata: y\rdata: z\r')).toEqual([
      { event: 'progress', data: 'x' },
    ]);
    // The trailing \r may be half of \r\n: only the next chunk decides.
    expect(p.feed('\n')).toEqual([]);
    expect(p.feed('\n')).toEqual([{ event: 'message', data: 'y\nz' }]);
  });

  it('ignores comments and keep-alives, keeps ids, drops empty events', () => {
    const p = new SseParser();
    const events = p.feed(': keep-alive\n\nid: 7\nevent: progress\ndata:no-space\n\nevent: lone\n\n');
    expect(events).toEqual([{ event: 'progress', data: 'no-space', id: '7' }]);
  });

  it('reads what axum writes for a JSON event', () => {
    const p = new SseParser();
    const wire = 'event: progress\ndata: {"execution_id":"e1","step_id":"resize","status":"completed","message":"","timestamp":"t","processing_time_ms":3.5}\n\n';
    const [event] = p.feed(wire);
    expect(event.event).toBe('progress');
    expect(JSON.parse(event.data).processing_time_ms).toBe(3.5);
  });
});
