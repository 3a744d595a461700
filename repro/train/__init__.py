"""Training pieces shared by every paper: initialisation and the defaults used where a paper is silent."""
