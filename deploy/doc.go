// Package deploy owns deployments: their records and views (types.go), the
// deploy API's rules, and where records are kept.
//
//   - decode.go and commas.go turn request bodies into CreateRequest and
//     UpdateRequest, taking DeepInfra's documented bodies as pasted (a
//     trailing comma before '}' or ']') and refusing anything else that is
//     not JSON with an error that says where, or which field.
//   - validate.go is the one place the limits and name grammars live
//     (model_name, hf.repo and hf.revision after Hugging Face's and git's,
//     the GPU quota); other packages that render these values (jobs) call
//     its checks rather than keep their own.
//   - errors.go: every refusal is a *FieldError naming the field, whose
//     message is written for the API's user, with a kind (ErrMalformed,
//     ErrOverQuota, ...) from which the API picks the HTTP status.
//   - store.go: the Store serialises changes over a Backend, one writer's
//     (filebackend.go: one JSON file), or a SharedBackend (shared.go; Nomad
//     Variables in package nomad) that every thaw server replica writes:
//     writes checked against the version last read (a lost race is
//     ErrConflict), and Store.Run following the other replicas' changes.
package deploy
