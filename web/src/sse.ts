// Server-Sent Events over fetch: EventSource cannot send the bearer token,
// so the stream is read and parsed here (the text/event-stream format of the
// HTML standard: fields per line, an event per blank line).

import { authHeaders, errorFrom } from './api';

export interface SseEvent {
  event: string;
  data: string;
  id?: string;
}

/** Incremental parser: feed it chunks as they arrive, get whole events back. */
export class SseParser {
  private buffer = '';
  private eventType = '';
  private data: string[] = [];
  private lastId: string | undefined;

  feed(chunk: string): SseEvent[] {
    this.buffer += chunk;
    const events: SseEvent[] = [];
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      if (!match) break;
      // A lone \r at the end may be the first half of \r\n: wait for more.
      if (match[0] === '\r' && match.index === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      const event = this.line(line);
      if (event) events.push(event);
    }
    return events;
  }

  private line(line: string): SseEvent | null {
    if (line === '') {
      if (this.data.length === 0) {
        this.eventType = '';
        return null;
      }
      const event: SseEvent = { event: this.eventType || 'message', data: this.data.join('\n') };
      if (this.lastId !== undefined) event.id = this.lastId;
      this.eventType = '';
      this.data = [];
      return event;
    }
    if (line.startsWith(':')) return null; // comment (keep-alive)
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.eventType = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id' && !value.includes('\0')) this.lastId = value;
    return null;
  }
}

/**
 * Reads `url` as an event stream until it ends or `signal` aborts; each event
 * goes to `onEvent`. Resolves when the server closes the stream.
 */
export async function readEventStream(
  url: string,
  onEvent: (event: SseEvent) => void,
  signal: AbortSignal,
): Promise<void> {
  const response = await fetch(url, {
    headers: { Accept: 'text/event-stream', ...authHeaders() },
    signal,
    cache: 'no-store',
  });
  if (!response.ok) throw await errorFrom(response);
  if (!response.body) throw new Error('the event stream has no body');
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SseParser();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      for (const event of parser.feed(value)) onEvent(event);
    }
  } finally {
    reader.releaseLock();
  }
}
