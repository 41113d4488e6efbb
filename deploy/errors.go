package deploy

import (
	"errors"
	"fmt"
)

// Kinds of FieldError, for the API to choose a status. A FieldError whose
// Err is nil is a value that is missing or out of range (422).
var (
	// ErrBadJSON: the body is not a JSON object (syntax, encoding, or
	// another kind of value at the top).
	ErrBadJSON = errors.New("request body is not a JSON object")
	// ErrWrongType: a field holds the wrong kind of JSON value.
	ErrWrongType = errors.New("field of the wrong type")
	// ErrUnknownField: the body has a field the API does not take.
	ErrUnknownField = errors.New("unknown field")
	// ErrRepeatedField: the body gives one field twice.
	ErrRepeatedField = errors.New("repeated field")
	// ErrMalformed: a name breaks its grammar (model_name, hf.repo,
	// hf.revision) or an argument holds characters that are never allowed.
	ErrMalformed = errors.New("malformed value")
	// ErrOverQuota: the deployment would not fit the user's GPU quota.
	ErrOverQuota = errors.New("over GPU quota")
)

// FieldError is a request thaw refuses, naming the offending field (the
// OpenAI error's "param"). Its Message is written for the API's user and
// never holds server details: it is the only error text a response shows.
type FieldError struct {
	// Field is the dotted path of the field, e.g. "hf.revision"; "" when the
	// body as a whole is at fault.
	Field string
	// Message says what is wrong and what is allowed.
	Message string
	// Err is the kind of failure (ErrBadJSON, ErrWrongType, ...), or nil
	// for a missing or out-of-range value.
	Err error
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// Unwrap returns the kind, so that errors.Is(err, ErrMalformed) works.
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

func kindErr(kind error, field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...), Err: kind}
}
