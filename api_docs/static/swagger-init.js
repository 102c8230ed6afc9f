// Starts Swagger UI on the page's #swagger-ui element (its data-* attributes say what to show).
// A public description is loaded by URL. One behind a key cannot be: the page first shows a stub that only declares
// the key's scheme, so Swagger UI's Authorize box asks for the key; with it, the real description is fetched and
// shown, and Swagger UI sends the key with every "Try it out" (the real description names the same scheme).
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  var specUrl = root.dataset.specUrl;
  var keyHeader = root.dataset.keyHeader;
  var scheme = root.dataset.keyScheme;
  var title = root.dataset.title;

  if (!keyHeader) {
    window.ui = SwaggerUIBundle({ url: specUrl, dom_id: "#swagger-ui", deepLinking: true });
    return;
  }

  function stub(description) {
    var schemes = {};
    schemes[scheme] = { type: "apiKey", in: "header", name: keyHeader };
    return { openapi: "3.1.0", info: { title: title, version: "", description: description },
             paths: {}, components: { securitySchemes: schemes }, security: [] };
  }

  var loadedWith = null;
  function load(system, key) {
    if (key === loadedWith) return;
    loadedWith = key;
    var headers = {};
    headers[keyHeader] = key;
    fetch(specUrl, { headers: headers, credentials: "omit" })
      .then(function (response) {
        if (!response.ok) throw new Error("the key was refused (HTTP " + response.status + ")");
        return response.json();
      })
      .then(function (description) { system.specActions.updateSpec(JSON.stringify(description)); })
      .catch(function (error) {
        loadedWith = null;
        system.specActions.updateSpec(JSON.stringify(stub("Could not load the description: " + error.message +
          ". Click Authorize, log out and enter another key.")));
      });
  }

  // Authorizing the stub's scheme is what loads the real description.
  function KeyLoadsDescription(system) {
    return { statePlugins: { auth: { wrapActions: {
      authorize: function (original) {
        return function (payload) {
          var result = original(payload);
          var given = payload && payload[scheme] && payload[scheme].value;
          if (given) load(system, given);
          return result;
        };
      },
    } } } };
  }

  window.ui = SwaggerUIBundle({
    spec: stub("This description needs an API key: click Authorize and enter it (header " + keyHeader + ")."),
    dom_id: "#swagger-ui",
    deepLinking: true,
    plugins: [KeyLoadsDescription],
  });
})();
