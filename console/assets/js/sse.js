// sse.js: a server-sent event reader over fetch (EventSource cannot send
// the Authorization header). It parses the text/event-stream format: id,
// event, data (joined by newlines), comment lines ignored; lines end in
// \n or \r\n.

// readEvents reads res.body until it ends or signal aborts, calling
// onEvent({id, event, data}) for each event. It resolves when the stream
// ends and rejects on a read error (an abort rejects with AbortError).
export async function readEvents(res, onEvent, signal) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  const abort = () => reader.cancel().catch(() => {});
  if (signal) signal.addEventListener('abort', abort, { once: true });
  let buf = '';
  let ev = { id: '', event: '', data: [] };
  const line = (l) => {
    if (l === '') {
      if (ev.data.length || ev.event) onEvent({ id: ev.id, event: ev.event || 'message', data: ev.data.join('\n') });
      ev = { id: ev.id, event: '', data: [] };
      return;
    }
    if (l.startsWith(':')) return;
    const i = l.indexOf(':');
    const field = i < 0 ? l : l.slice(0, i);
    let value = i < 0 ? '' : l.slice(i + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') ev.data.push(value);
    else if (field === 'event') ev.event = value;
    else if (field === 'id') ev.id = value;
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (signal && signal.aborted) throw new DOMException('aborted', 'AbortError');
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        line(buf.slice(0, nl).replace(/\r$/, ''));
        buf = buf.slice(nl + 1);
      }
    }
    if (buf) line(buf);
    line('');
  } finally {
    if (signal) signal.removeEventListener('abort', abort);
  }
}
