// Entry of the browser bundle the server embeds and serves at GET /lattice.js (the demo page's
// client): the generated TypeScript client, protobufjs/minimal and fflate, as one IIFE that
// defines the global `Lattice`. Built by `npm run bundle` (esbuild, pinned in package-lock.json);
// deploy/ci/ts.sh rebuilds it and fails when the committed file differs.
export * from "../../ts/index";
