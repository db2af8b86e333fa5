// Validates an OpenAPI document with @apidevtools/swagger-parser (the
// OpenAPI 3.1 schema, then $ref resolution): node validate.js FILE
// prints "valid" (exit 0) or every problem (exit 1).
"use strict";
const SwaggerParser = require("@apidevtools/swagger-parser");

SwaggerParser.validate(process.argv[2])
  .then((api) => console.log("valid " + api.openapi))
  .catch((e) => {
    console.error(e.message);
    process.exit(1);
  });
