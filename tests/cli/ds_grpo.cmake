# Golden CLI test of ds-grpo (included by tests/cli/CMakeLists.txt); the base model comes from ds-pretrain.
if(TARGET ds-grpo AND TARGET ds-pretrain AND TARGET ds-tokenize)
  add_test(NAME cli_ds_grpo
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/ds_grpo.sh $<TARGET_FILE:ds-grpo> $<TARGET_FILE:ds-pretrain>
                   $<TARGET_FILE:ds-tokenize>)
  set_tests_properties(cli_ds_grpo PROPERTIES ENVIRONMENT OMP_WAIT_POLICY=passive TIMEOUT 300)
endif()
