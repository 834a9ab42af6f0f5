// Package serve is igpt serve: a small web server that shows every stage
// output under a root (local or gs://) in a browser, without changing it.
//
// Pages (html/template, assets embedded, no build step, no CDN):
//
//   - / lists every stage output: stage, key, state (done, running,
//     failed, stale lock), time, the headline figure igpt run's summary
//     prints, its config and its upstream and downstream outputs.
//   - /run/STAGE/KEY shows one output and the chain of stages it belongs
//     to: loss curves from metrics.jsonl (SVG drawn by the page's own
//     script, hover and log scale), probe tables, pictures, a step slider
//     over the kept checkpoints, and a form that completes an uploaded or
//     test picture, streamed token by token.
//   - /compare?run=STAGE/KEY&run=… overlays 2–6 runs' curves and shows
//     their pictures side by side.
//
// Live: /api/events/STAGE/KEY streams (server-sent events) the new lines
// of a running stage's metrics.jsonl and its newest checkpoint, polling
// the folder; the stream ends when the stage's manifest appears.
//
// Safety: the server binds loopback unless told otherwise; any other
// address needs the access token it prints with the URL. Only files that a
// stage folder's manifest lists (or metrics.jsonl and PNGs of a running
// stage) are served, after the path is checked to stay inside the root
// (no "..", no encoded slashes, no symlink out). Uploads are capped in
// bytes and pixels (stages.MaxPicturePixels, the limit igpt sample
// --complete applies). Completions and checkpoint pictures run one at a
// time per model, the rest queue with a visible position; each has a
// deadline, and a client that goes away or stops reading does not hold the
// model. Every handler has a timeout. Nothing is written under the root:
// completions and checkpoint pictures live in memory.
package serve
