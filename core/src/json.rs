//! A bounded, allocation-free JSON tokenizer for the manifest.
