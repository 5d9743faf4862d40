/* A shared object that is not a diffuse plugin: no df_plugin_entry. */
int fixture_not_a_plugin(void);
int fixture_not_a_plugin(void) { return 42; }
