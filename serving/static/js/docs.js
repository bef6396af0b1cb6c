// The OpenAPI page at /docs: the vendored Swagger UI (serving/static/vendor/swagger-ui) over /openapi.json.
// Loaded from a file, not inline, so the page keeps the ingress's no-inline-script policy.

window.ui = window.SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  presets: [window.SwaggerUIBundle.presets.apis],
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  queryConfigEnabled: false, // never take a spec URL or config from the page's query string
  validatorUrl: null, // no badge fetched from an online validator
});
