# Golden CLI test of ds-rollout (included by tests/cli/CMakeLists.txt); the checkpoint comes from ds-pretrain.
if(TARGET ds-rollout AND TARGET ds-pretrain AND TARGET ds-tokenize)
  add_test(NAME cli_ds_rollout
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/ds_rollout.sh $<TARGET_FILE:ds-rollout> $<TARGET_FILE:ds-pretrain>
                   $<TARGET_FILE:ds-tokenize>)
  set_tests_properties(cli_ds_rollout PROPERTIES ENVIRONMENT OMP_WAIT_POLICY=passive TIMEOUT 300 SKIP_RETURN_CODE 77)
endif()
