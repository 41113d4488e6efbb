// demo.js: a model's chat playground. Replies stream token by token from
// POST /v1/openai/chat/completions (stream: true); Stop aborts the request,
// which frees the model's slot at once. While no token has come, #cold-state
// says whether an instance is starting (with the seconds waited) or the
// first token is on its way.
import { api, raw, ApiError } from '../api.js';
import { readEvents } from '../sse.js';
import { el, setText, duration } from '../dom.js';
import { showModel } from './model.js';

export function mount(root, { owner, model }) {
  document.title = `${owner}/${model} · thaw`;
  const ctl = new AbortController();
  let chat = null;
  showModel(root, owner, model, ctl.signal, (d) => {
    chat = new Chat(d);
    root.append(chat.root);
    chat.input.focus();
  });
  return () => { ctl.abort(); if (chat) chat.close(); };
}

// Chat is the playground of deployment d.
class Chat {
  constructor(d) {
    this.d = d;
    this.history = [];
    this.ctl = null;
    this.tick = null;
    this.messages = el('div', { id: 'messages', role: 'log', 'aria-live': 'polite', 'aria-label': 'Conversation' });
    this.input = el('textarea', { id: 'chat-input', name: 'message', rows: '3', required: true, placeholder: 'Say something… (Enter sends, Shift+Enter for a new line)' });
    this.send = el('button', { id: 'chat-send', type: 'submit', text: 'Send' });
    this.stop = el('button', { id: 'chat-stop', type: 'button', class: 'secondary', disabled: true, text: 'Stop' });
    this.cold = el('p', { id: 'cold-state', role: 'status', hidden: true });
    this.error = el('p', { id: 'chat-error', class: 'error', role: 'alert' });
    this.maxTokens = el('input', { id: 'max-tokens', name: 'max_tokens', type: 'number', inputmode: 'numeric', min: '1', step: '1', value: '256' });
    this.temperature = el('input', { id: 'temperature', name: 'temperature', type: 'number', inputmode: 'decimal', min: '0', max: '2', step: '0.1', value: '0.7' });
    this.system = el('textarea', { id: 'system-prompt', name: 'system', rows: '4', placeholder: 'You are a helpful assistant.' });
    this.form = el('form', { id: 'chat-form', novalidate: true },
      el('label', { for: 'chat-input', class: 'visually-hidden', text: 'Message' }), this.input,
      el('div', { class: 'actions' }, this.send, this.stop,
        el('button', { type: 'button', class: 'secondary', text: 'Clear', onclick: () => this.clear() })));
    this.chat = el('section', { id: 'chat', class: 'panel', 'data-state': 'idle', 'aria-label': 'Chat' },
      this.messages, this.cold, this.error, this.form);
    const fieldOf = (id, label, input) => el('div', { class: 'field' }, el('label', { for: id, text: label }), input);
    this.root = el('section', { class: 'page' },
      el('div', { class: 'page-head' },
        el('h1', { text: d.full_name }),
        el('div', { class: 'actions' },
          el('a', { class: 'button secondary', href: `/console/deployments/${encodeURIComponent(d.deploy_id)}`, text: 'Deployment' }),
          el('a', { class: 'button secondary', href: location.pathname.replace(/\/$/, '') + '/api', text: 'API' }))),
      el('div', { class: 'demo' }, this.chat,
        el('aside', { class: 'panel', 'aria-label': 'Parameters' },
          el('h2', { text: 'Parameters' }),
          fieldOf('system-prompt', 'System prompt', this.system),
          fieldOf('max-tokens', 'Max tokens', this.maxTokens),
          fieldOf('temperature', 'Temperature', this.temperature))));
    this.form.addEventListener('submit', (e) => { e.preventDefault(); this.ask(); });
    this.input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); this.ask(); }
    });
    this.stop.addEventListener('click', () => this.abort());
  }

  setState(s) {
    this.chat.dataset.state = s;
    const busy = s === 'waiting' || s === 'streaming';
    this.stop.disabled = !busy;
    this.send.disabled = busy;
    if (s !== 'waiting') this.coldOff();
  }

  clear() {
    this.abort();
    this.history = [];
    this.messages.replaceChildren();
    setText(this.error, '');
    this.setState('idle');
  }

  abort() {
    if (this.ctl) { this.ctl.abort(); this.ctl = null; }
  }

  close() { this.abort(); this.coldOff(); }

  // body is the chat request: the system prompt, the conversation so far.
  body() {
    const messages = [];
    if (this.system.value.trim()) messages.push({ role: 'system', content: this.system.value });
    messages.push(...this.history);
    const out = { model: this.d.full_name, messages, stream: true };
    const mt = Number(this.maxTokens.value);
    if (this.maxTokens.value !== '' && Number.isFinite(mt)) out.max_tokens = mt;
    const t = Number(this.temperature.value);
    if (this.temperature.value !== '' && Number.isFinite(t)) out.temperature = t;
    return out;
  }

  async ask() {
    const text = this.input.value.trim();
    if (!text || this.ctl) return;
    this.input.value = '';
    setText(this.error, '');
    this.history.push({ role: 'user', content: text });
    this.messages.append(el('div', { class: 'message user', text }));
    const out = el('div', { class: 'message assistant' });
    this.messages.append(out);
    this.messages.scrollTop = this.messages.scrollHeight;
    const ctl = new AbortController();
    this.ctl = ctl;
    this.setState('waiting');
    this.coldOn(ctl.signal);
    let reply = '';
    try {
      reply = await this.stream(ctl.signal, out);
      this.setState('done');
    } catch (e) {
      reply = out.textContent;
      if (e.name === 'AbortError') {
        this.setState('stopped');
        out.after(el('p', { class: 'message-meta', text: 'stopped' }));
      } else {
        ctl.abort(); // release the response, if one came
        this.setState('error');
        setText(this.error, e.message);
        if (!out.textContent) out.remove();
      }
    } finally {
      if (this.ctl === ctl) this.ctl = null;
    }
    if (reply) this.history.push({ role: 'assistant', content: reply });
    else this.history.pop();
    this.input.focus();
  }

  // stream sends the request and appends the reply's tokens to out as they
  // come; it returns the whole reply.
  async stream(signal, out) {
    const res = await raw('/v1/openai/chat/completions', { method: 'POST', body: this.body(), accept: 'text/event-stream', signal });
    const cold = res.headers.get('X-Thaw-Cold-Start');
    let reply = '';
    let finish = '';
    await readEvents(res, (ev) => {
      if (!ev.data || ev.data === '[DONE]') return;
      let chunk;
      try { chunk = JSON.parse(ev.data); } catch { return; }
      if (chunk.error) throw new ApiError(500, chunk);
      const choice = (chunk.choices || [])[0] || {};
      const piece = (choice.delta && choice.delta.content) || '';
      if (choice.finish_reason) finish = choice.finish_reason;
      if (!piece) return;
      if (this.chat.dataset.state === 'waiting') this.setState('streaming');
      reply += piece;
      out.append(piece);
      this.messages.scrollTop = this.messages.scrollHeight;
    }, signal);
    const meta = [];
    if (cold) meta.push(`cold start ${cold}`);
    if (finish === 'length') meta.push('stopped at max tokens');
    if (meta.length) out.after(el('p', { class: 'message-meta', text: meta.join(' · ') }));
    return reply;
  }

  // coldOn shows #cold-state until the first token: "starting an
  // instance... 12s" while the deployment runs no instance, else "waiting
  // for the first token...".
  coldOn(signal) {
    const start = Date.now();
    let running = this.d.instances.running;
    const show = () => setText(this.cold, running > 0 ? 'waiting for the first token...'
      : `starting an instance... ${duration((Date.now() - start) / 1000)}`);
    show();
    this.cold.hidden = false;
    const path = `/deploy/${encodeURIComponent(this.d.deploy_id)}`;
    let polls = 0;
    this.tick = setInterval(async () => {
      if (polls++ % 2 === 0) {
        try { running = (await api(path, { signal })).instances.running; } catch { /* keep the last count */ }
      }
      if (!this.cold.hidden) show();
    }, 1000);
    api(path, { signal }).then((d) => { running = d.instances.running; if (!this.cold.hidden) show(); }).catch(() => {});
  }

  coldOff() {
    clearInterval(this.tick);
    this.tick = null;
    this.cold.hidden = true;
  }
}
