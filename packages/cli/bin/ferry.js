#!/usr/bin/env node
// Committed shim so `npx ferry` works from the moment npm links workspaces, before the first build.
require('../dist/main.js');
