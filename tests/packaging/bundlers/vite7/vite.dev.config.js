// The one line `vite dev` of Vite 7 and older needs (docs/sdk.md): its
// dependency pre-bundling moves the package's JS away from its .wasm.
// `vite build` uses no config.
export default { optimizeDeps: { exclude: ['liveline-client'] } };
