"""Answer generators, benchmark scorers and the speed benchmark."""
