package main

import (
	"net/http"

	"github.com/thawhq/thaw/console"
)

// consoleHandler serves the web console to browsers on the paths no API
// route takes, and hands every other request to notFound.
func consoleHandler(notFound http.Handler) http.Handler { return console.Handler(notFound) }
