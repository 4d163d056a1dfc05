//! Guest loaders: place a guest kernel and its boot information in guest memory and describe the entry state.
