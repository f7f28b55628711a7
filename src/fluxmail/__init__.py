"""fluxmail: send email from Python and the command line."""
