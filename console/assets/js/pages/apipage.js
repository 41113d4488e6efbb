// apipage.js: ready-to-copy calls for one model: curl, the OpenAI Python
// and JavaScript SDKs, DeepInfra's native call and the deploy-management
// calls, with this thaw's base URL and the model's name. The token is read
// from the environment in every snippet, never written into the page.
import { el, setText } from '../dom.js';
import { showModel } from './model.js';

// snippets returns the page's code for deployment d served at origin.
export function snippets(origin, d) {
  const base = origin + '/v1/openai';
  const m = JSON.stringify(d.full_name);
  const id = d.deploy_id;
  return [
    ['curl', 'curl (OpenAI-compatible)', `export THAW_TOKEN=...   # your API token
curl ${base}/chat/completions \\
  -H "Authorization: Bearer $THAW_TOKEN" \\
  -H "Content-Type: application/json" \\
  -d '{"model": ${m}, "stream": true,
       "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 64}'`],
    ['python', 'Python (openai SDK)', `# pip install openai
import os
from openai import OpenAI

client = OpenAI(base_url=${JSON.stringify(base)}, api_key=os.environ["THAW_TOKEN"])
stream = client.chat.completions.create(
    model=${m},
    messages=[{"role": "user", "content": "Hello"}],
    max_tokens=64,
    stream=True,
)
for chunk in stream:
    print(chunk.choices[0].delta.content or "", end="", flush=True)`],
    ['javascript', 'JavaScript (openai SDK)', `// npm install openai
import OpenAI from "openai";

const client = new OpenAI({ baseURL: ${JSON.stringify(base)}, apiKey: process.env.THAW_TOKEN });
const stream = await client.chat.completions.create({
  model: ${m},
  messages: [{ role: "user", content: "Hello" }],
  max_tokens: 64,
  stream: true,
});
for await (const chunk of stream) {
  process.stdout.write(chunk.choices[0]?.delta?.content ?? "");
}`],
    ['native', 'Native (DeepInfra-style)', `curl ${origin}/v1/inference/${d.full_name} \\
  -H "Authorization: Bearer $THAW_TOKEN" \\
  -H "Content-Type: application/json" \\
  -d '{"input": "Hello"}'`],
    ['deploy', 'Manage the deployment', `# read it (status, instances, settings)
curl ${origin}/deploy/${id} -H "Authorization: Bearer $THAW_TOKEN"

# change min/max instances
curl -X PUT ${origin}/deploy/${id} -H "Authorization: Bearer $THAW_TOKEN" \\
  -d '{"settings": {"min_instances": 0, "max_instances": 2}}'

# its events (add -N -H "Accept: text/event-stream" to follow them live)
curl ${origin}/deploy/${id}/events -H "Authorization: Bearer $THAW_TOKEN"

# its metrics over the last hour, and what it cost
curl ${origin}/deploy/${id}/stats -H "Authorization: Bearer $THAW_TOKEN"
curl ${origin}/deploy/${id}/usage -H "Authorization: Bearer $THAW_TOKEN"

# delete it (stops its instances, frees the GPUs)
curl -X DELETE ${origin}/deploy/${id} -H "Authorization: Bearer $THAW_TOKEN"`],
  ];
}

export function mount(root, { owner, model }) {
  document.title = `${owner}/${model} API · thaw`;
  const ctl = new AbortController();
  showModel(root, owner, model, ctl.signal, (d) => root.append(page(d)));
  return () => ctl.abort();
}

function page(d) {
  const demo = '/' + d.full_name.split('/').map(encodeURIComponent).join('/');
  const boxes = snippets(location.origin, d).map(([lang, title, code]) => {
    const pre = el('pre', { class: 'snippet', 'data-lang': lang, tabindex: '0', 'aria-labelledby': `h-${lang}` }, el('code', { text: code }));
    const status = el('span', { class: 'help', role: 'status' });
    const btn = el('button', { type: 'button', class: 'copy secondary', 'data-lang': lang, 'aria-label': `Copy the ${title} snippet`, text: 'Copy' });
    btn.addEventListener('click', () => copy(code, pre, status));
    return el('div', { class: 'snippet-box' },
      el('div', { class: 'snippet-head' }, el('h2', { id: `h-${lang}`, text: title }), el('span', {}, status, ' ', btn)), pre);
  });
  return el('section', { class: 'page' },
    el('div', { class: 'page-head' },
      el('h1', { text: `${d.full_name}: API` }),
      el('div', { class: 'actions' },
        el('a', { class: 'button secondary', href: demo, text: 'Try it' }),
        el('a', { class: 'button secondary', href: `/console/deployments/${encodeURIComponent(d.deploy_id)}`, text: 'Deployment' }))),
    el('p', {}, 'Base URL ', el('code', { text: location.origin + '/v1/openai' }), ', model ', el('code', { text: d.full_name }),
      '. Every call needs your API token as a bearer token; the snippets read it from ', el('code', { text: 'THAW_TOKEN' }), '.'),
    ...boxes);
}

// copy puts text on the clipboard; where the Clipboard API is refused (a
// page not served over HTTPS or loopback) it selects the snippet instead.
async function copy(text, pre, status) {
  try {
    await navigator.clipboard.writeText(text);
    setText(status, 'Copied.');
  } catch {
    const sel = getSelection();
    const range = document.createRange();
    range.selectNodeContents(pre);
    sel.removeAllRanges();
    sel.addRange(range);
    setText(status, 'Selected: press Ctrl+C (⌘C) to copy.');
  }
  setTimeout(() => setText(status, ''), 4000);
}
