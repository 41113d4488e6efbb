// Package httperr writes errors in OpenAI's shape,
// {"error": {"message", "type", "param", "code"}}, which every thaw endpoint
// uses, so that OpenAI SDKs surface thaw's messages unchanged.
package httperr
