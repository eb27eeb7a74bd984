// A wasi:http/proxy handler in JavaScript, built with componentize-js
// (scripts/build-js-guest.sh -> target/guests/javascript.wasm).
//
//   GET /               a greeting with the method and the path
//   GET /origin/<path>  <path> fetched from the service's `origin` backend
//                       (through the node's HTTP cache) and relayed
//   GET /quote/<id>     the origin's /quotes/<id>, kept for a minute in the
//                       tenant's cache through the platform's cache API, so
//                       only the first request reaches the origin
//   GET /visits         counts the visit in the `counters` KV store
//                       (wasi:keyvalue/atomics) and answers with the count
//   GET /flag           the `feature_x` flag from the service's config
//                       (wasi:config/store)
//
// Backends are reached by name: http://origin/... goes to the backend the
// service declares as `origin`; any other authority is refused by the node.

import { insert, lookup } from 'edge:platform/cache@0.1.0';
import { open } from 'wasi:keyvalue/store@0.2.0-draft';
import { increment } from 'wasi:keyvalue/atomics@0.2.0-draft';
import { get as configValue } from 'wasi:config/store@0.2.0-rc.1';

const QUOTE_TTL_MS = 60_000;

addEventListener('fetch', (event) => event.respondWith(handle(event.request)));

async function handle(request) {
  const url = new URL(request.url);
  const path = url.pathname + url.search;
  console.error(`javascript: ${request.method} ${path}`);
  if (url.pathname.startsWith('/origin/')) {
    return relay(path.slice('/origin'.length));
  }
  if (url.pathname.startsWith('/quote/')) {
    return quote(url.pathname.slice('/quote/'.length));
  }
  if (url.pathname === '/visits') {
    return visits();
  }
  if (url.pathname === '/flag') {
    return text(200, `feature_x is ${configValue('feature_x') === 'on' ? 'on' : 'off'}\n`);
  }
  return text(200, `hello from javascript\nmethod: ${request.method}\npath: ${path}\n`);
}

async function relay(originPath) {
  let response;
  try {
    response = await fetch(`http://origin${originPath}`);
  } catch (error) {
    return text(502, `origin unavailable: ${error}\n`);
  }
  const headers = new Headers({ 'x-edge-guest': 'javascript' });
  const contentType = response.headers.get('content-type');
  if (contentType) headers.set('content-type', contentType);
  return new Response(await response.arrayBuffer(), { status: response.status, headers });
}

async function quote(id) {
  const key = `quote:${id}`;
  const cached = lookup(key);
  if (cached !== undefined) {
    return text(200, new TextDecoder().decode(cached), { 'x-quote-cache': 'hit' });
  }
  let response;
  try {
    response = await fetch(`http://origin/quotes/${encodeURIComponent(id)}`);
  } catch (error) {
    return text(502, `origin unavailable: ${error}\n`);
  }
  const body = await response.text();
  if (response.status !== 200) {
    return text(response.status, body, { 'x-quote-cache': 'miss' });
  }
  try {
    insert(key, new TextEncoder().encode(body), BigInt(QUOTE_TTL_MS), [`quote-${id}`]);
  } catch (error) {
    // Not cached (the key or the value is over a limit): still answer.
    console.error(`javascript: cache insert refused: ${JSON.stringify(error)}`);
  }
  return text(200, body, { 'x-quote-cache': 'miss' });
}

function visits() {
  try {
    const count = increment(open('counters'), 'visits', 1n);
    return text(200, `visit ${count}\n`);
  } catch (error) {
    // A wasi:keyvalue error: { tag: 'no-such-store' } or { tag: 'other', val }.
    const payload = error.payload ?? error;
    return text(payload.tag === 'no-such-store' ? 404 : 503, `${payload.tag} ${payload.val ?? ''}\n`);
  }
}

function text(status, body, extraHeaders = {}) {
  return new Response(body, {
    status,
    headers: { 'content-type': 'text/plain; charset=utf-8', ...extraHeaders },
  });
}
