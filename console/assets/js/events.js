// events.js: a deployment's events feed, followed live over server-sent
// events (GET /deploy/{id}/events with Accept: text/event-stream), resumed
// after a drop from the last event's id.
import { raw, q, isMissing } from './api.js';
import { readEvents } from './sse.js';
import { el, timeEl } from './dom.js';

const MAX_SHOWN = 500;

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

// follow calls onEvent(event) for each of the deployment's events, oldest
// first, until signal aborts; onStatus(text) says how the feed is doing.
// A thaw that answers JSON instead of a stream is polled every 5 s; one
// without the endpoint (404) is retried every 15 s.
export async function follow(deployID, { onEvent, onStatus, signal }) {
  let after = '';
  let delay = 1000;
  const path = `/deploy/${encodeURIComponent(deployID)}/events`;
  while (!signal.aborted) {
    try {
      const res = await raw(path + q({ after, stream: 1 }), {
        accept: 'text/event-stream', signal, headers: after ? { 'Last-Event-ID': after } : {},
      });
      if (!(res.headers.get('Content-Type') || '').includes('text/event-stream')) {
        const body = await res.json();
        for (const e of body.events || []) { onEvent(e); after = e.id || after; }
        onStatus('');
        await sleep(5000, signal);
        continue;
      }
      onStatus('live');
      delay = 1000;
      await readEvents(res, (ev) => {
        if (!ev.data) return;
        let e;
        try { e = JSON.parse(ev.data); } catch { return; }
        onEvent(e);
        after = ev.id || e.id || after;
      }, signal);
      onStatus('reconnecting…');
    } catch (e) {
      if (signal.aborted || e.name === 'AbortError') return;
      if (isMissing(e)) {
        onStatus(e.code === 'deployment_not_found' ? 'deployment not found' : 'events are not available on this thaw');
        delay = 15000;
      } else {
        onStatus(`disconnected (${e.message}), retrying…`);
      }
    }
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 15000);
  }
}

// Feed is the #events list, newest first, without duplicates.
export class Feed {
  constructor() {
    this.seen = new Set();
    this.list = el('ul', { id: 'events', class: 'plain feed', 'aria-live': 'polite', 'aria-relevant': 'additions' });
    this.empty = el('p', { class: 'empty', text: 'No events yet.' });
    this.status = el('p', { class: 'help' });
    this.root = el('div', {}, this.status, this.empty, this.list);
  }

  add(e) {
    const key = e.id || `${e.at}|${e.type}|${e.message}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    this.empty.hidden = true;
    const li = el('li', { 'data-type': e.type || 'event' },
      timeEl(e.at), el('span', { class: 'type', text: e.type || 'event' }), el('span', { class: 'msg', text: e.message || '' }));
    this.list.prepend(li);
    while (this.list.children.length > MAX_SHOWN) this.list.lastElementChild.remove();
  }
}
