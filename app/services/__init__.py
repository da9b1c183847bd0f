"""The console's use cases: what the tabs, the API and the scripts do with the store, the engine and the
policies. No Gradio here: a use case takes plain values and raises the domain's errors."""
