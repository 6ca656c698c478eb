// Starts Swagger UI on the server's own OpenAPI document.
//
// The token a reader enters under "Authorize" lives only in this page's
// memory: persistAuthorization stays off (it would copy it to localStorage),
// and nothing here writes cookies or storage. No validator badge (it would
// send the document to validator.swagger.io), no URL box to load other
// documents.
window.addEventListener("load", function () {
  SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: false,
    persistAuthorization: false,
    validatorUrl: null,
    tryItOutEnabled: false,
    displayRequestDuration: true,
  });
});
