// poll.js: repeating work that stops with the page.

// every runs fn now and then ms after each run finishes (runs never
// overlap), until the returned stop function is called. fn gets an
// AbortSignal that aborts on stop. Errors are fn's to show; one that
// escapes is logged and polling goes on.
export function every(ms, fn) {
  const ctl = new AbortController();
  let timer = null;
  const run = async () => {
    try {
      await fn(ctl.signal);
    } catch (e) {
      if (!ctl.signal.aborted && e.name !== 'AbortError') console.warn('poll', e);
    }
    if (!ctl.signal.aborted) timer = setTimeout(run, ms);
  };
  run();
  return () => { ctl.abort(); clearTimeout(timer); };
}
