// {{name}}: a request handler for the edge platform, on the web Fetch API.
//
// `edgectl dev` builds it with componentize-js and serves it on loopback,
// again on every change; `edgectl deploy {{name}}` builds it and deploys it.
// A backend the service declares is reached by name: fetch('http://origin/').

addEventListener('fetch', (event) => event.respondWith(handle(event.request)));

async function handle(request) {
  const url = new URL(request.url);
  return new Response(`hello from {{name}}\npath: ${url.pathname}\n`, {
    headers: { 'content-type': 'text/plain; charset=utf-8' },
  });
}
