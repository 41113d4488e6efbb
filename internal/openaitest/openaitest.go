// Package openaitest reads OpenAI's error envelope the way an OpenAI client
// does, for tests of the handlers that write it.
package openaitest

import (
	"encoding/json"
	"errors"
)

// Error is the "error" object of OpenAI's error envelope
// {"error":{"message":...,"type":...,"param":...,"code":...}}.
type Error struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"` // nil when null or absent
	Code    string  `json:"code"`
}

// DecodeError decodes body as OpenAI's error envelope. It fails unless body
// is one, with a message.
func DecodeError(body []byte) (Error, error) {
	var e struct {
		Error Error `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		return Error{}, err
	}
	if e.Error.Message == "" {
		return Error{}, errors.New(`no "error" object with a message`)
	}
	return e.Error, nil
}
