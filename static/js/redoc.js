// Starts Redoc on the API documentation page. The nonce lets the styles it writes pass the CSP; its search
// runs in a worker made from a blob: URL, which the CSP refuses, so the search box is left out.
(function () {
  const container = document.getElementById("redoc-container");
  const options = { disableSearch: true, ...JSON.parse(container.dataset.settings), nonce: container.dataset.nonce };
  Redoc.init(container.dataset.schemaUrl, options, container);
})();
